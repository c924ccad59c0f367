package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/nix-ota/nix-ota/cache"
)

// Progress pacing: a terminal line is redrawn at most every
// progressRedraw; in a pipe a new line comes at most every progressEvery
// and only after progressStep more of the path. A path done sooner than
// the first interval prints no byte line at all.
var (
	progressRedraw = 250 * time.Millisecond
	progressEvery  = time.Second
)

const progressStep = 20 // 1/20 of the path: 5%

// byteMeter prints the byte progress of the paths being pushed on stderr:
// on a terminal one line redrawn in place (the path that reported last),
// in a pipe plain lines. Several paths move at once, so each path and
// phase keeps its own pacing.
type byteMeter struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu       sync.Mutex
	lines    map[string]*meterLine // by phase and path
	lastDraw time.Time             // of the terminal line
	drawn    bool                  // a redrawn line is on the terminal
}

// meterLine is the pacing of one path's phase.
type meterLine struct {
	start, last time.Time
	lastDone    int64
}

func newByteMeter(w io.Writer) *byteMeter {
	f, ok := w.(*os.File)
	return &byteMeter{w: w, tty: ok && term.IsTerminal(int(f.Fd())), now: time.Now}
}

// update takes one report from cache.Pusher.Bytes and prints it if due.
func (m *byteMeter) update(b cache.ByteProgress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	k := b.Phase + " " + b.Path
	l := m.lines[k]
	if l == nil {
		if m.lines == nil {
			m.lines = map[string]*meterLine{}
		}
		l = &meterLine{start: now, last: now}
		m.lines[k] = l
	}
	if b.Total > 0 && b.Done >= b.Total {
		delete(m.lines, k) // that phase of the path is over
	}
	if !m.due(now, l, b) {
		return
	}
	l.last, l.lastDone = now, b.Done
	line := fmt.Sprintf("push: %s %s: %s", b.Phase, filepath.Base(b.Path), byteAmount(b, now.Sub(l.start)))
	if m.tty {
		fmt.Fprintf(m.w, "\r\033[K%s", line)
		m.drawn, m.lastDraw = true, now
	} else {
		fmt.Fprintln(m.w, line)
	}
}

func (m *byteMeter) due(now time.Time, l *meterLine, b cache.ByteProgress) bool {
	if m.tty {
		return now.Sub(m.lastDraw) >= progressRedraw && now.Sub(l.start) >= progressEvery
	}
	if now.Sub(l.last) < progressEvery {
		return false
	}
	return b.Total <= 0 || (b.Done-l.lastDone)*progressStep >= b.Total
}

// clear removes a redrawn line before a whole line is printed.
func (m *byteMeter) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drawn {
		fmt.Fprint(m.w, "\r\033[K")
		m.drawn = false
	}
}

// byteAmount is "12.0 of 300.0 MiB (4%), 6.0 MiB/s".
func byteAmount(b cache.ByteProgress, took time.Duration) string {
	rate := ""
	if took > 0 {
		rate = fmt.Sprintf(", %s/s", mib(int64(float64(b.Done)/took.Seconds())))
	}
	if b.Total <= 0 {
		return mib(b.Done) + rate
	}
	return fmt.Sprintf("%.1f of %s (%d%%)%s", float64(b.Done)/(1<<20), mib(b.Total), b.Done*100/b.Total, rate)
}
