package dashboard

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"path"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/status"
)

//go:embed index.html.tmpl
var pageSource string

var page = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"storeName": storeName,
	"storeHash": storeHash,
	"pct":       pct,
	"at":        At,
	"iso":       func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"idParts":   idParts,
	"tone":      tone,
	"size":      Size,
	"problems":  func(c Counts) int { return c.Failed + c.Offline + c.Invalid + c.NeedsReboot },
	"fingerprint": func(key string) string {
		if key == "" {
			return "unsigned"
		}
		return status.KeyFingerprint(key)
	},
	// Replaced per render with the fleet's generation time as "now".
	"ago":   func(time.Time) string { return "" },
	"until": func(time.Time) string { return "" },
}).Parse(pageSource))

// Size is a byte count in the unit that shows it best.
func Size(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// RefreshSeconds is how often the page reloads itself.
const RefreshSeconds = 60

// MaxRows caps the device table: rows are sorted problems first, so the
// page keeps every device that needs attention up to the cap and stays
// light enough for a phone; dashboard.json always has every device.
const MaxRows = 2000

// AlarmIDs is how many device ids the red banner names.
const AlarmIDs = 5

// At is how the page and `nix-ota status` show an absolute time: a static
// page cannot update "3h ago", so every age comes with the time itself.
func At(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// HTML renders the self-contained page: inline CSS, no script, no request
// to anywhere (it works from file://, any static host or a bucket).
func HTML(f *Fleet) ([]byte, error) {
	now := f.GeneratedAt
	t, err := page.Clone()
	if err != nil {
		return nil, err
	}
	t.Funcs(template.FuncMap{
		"ago":   func(x time.Time) string { return relative(now.Sub(x)) + " ago" },
		"until": func(x time.Time) string { return untilText(x.Sub(now)) },
	})
	var b bytes.Buffer
	rows, hidden := f.Devices, 0
	if len(rows) > MaxRows {
		rows, hidden = rows[:MaxRows], len(rows)-MaxRows
	}
	unverified, hiddenUnverified := f.Unverified, 0
	if len(unverified) > MaxRows {
		unverified, hiddenUnverified = unverified[:MaxRows], len(unverified)-MaxRows
	}
	if err := t.Execute(&b, struct {
		F                *Fleet
		Alarm            Alarm
		Rows             []Device
		Hidden           int
		Unverified       []Device
		HiddenUnverified int
		Refresh          int
		SkewMinutes      int
	}{f, f.Alarm(AlarmIDs), rows, hidden, unverified, hiddenUnverified, RefreshSeconds, int(MaxClockSkew / time.Minute)}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Alarm is what the red banner says: devices that failed, rolled back,
// rejected an update or sent an invalid status, and channels devices
// cannot follow.
type Alarm struct {
	Devices  int      // devices in an alarming state
	Parts    []string // "1 rolled-back", in the order of States
	IDs      []string // the first few such devices, problems first
	More     int      // such devices not named
	Channels []string // "prod: expired: …"
}

// Any reports whether there is anything to raise.
func (a Alarm) Any() bool { return a.Devices > 0 || len(a.Channels) > 0 }

// Alarm collects the banner from the sorted fleet, naming up to ids devices.
func (f *Fleet) Alarm(ids int) Alarm {
	var a Alarm
	for _, st := range States {
		if n := f.ByState[st]; n > 0 && Alarming(st) {
			a.Devices += n
			a.Parts = append(a.Parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	for _, d := range f.Devices {
		if Alarming(d.State) && len(a.IDs) < ids {
			a.IDs = append(a.IDs, d.ID)
		}
	}
	a.More = a.Devices - len(a.IDs)
	for _, c := range f.Channels {
		if strings.HasPrefix(c.Signature, "REJECTED") {
			a.Channels = append(a.Channels, c.Name+": signature "+c.Signature)
		} else if c.Problem != "" && !strings.HasPrefix(c.Problem, "expires soon") {
			a.Channels = append(a.Channels, c.Name+": "+c.Problem)
		}
	}
	return a
}

// tone styles a summary card: "zero" when there is nothing to count, so a
// 1 never looks like a 0.
func tone(n int, kind string) string {
	if n == 0 {
		return "zero"
	}
	return kind
}

// idParts splits a device id after each '-', '.' and '_' so the page can
// offer line breaks there and nowhere else.
func idParts(id string) []string {
	var parts []string
	for len(id) > 0 {
		i := strings.IndexAny(id, "-._")
		if i < 0 {
			break
		}
		parts, id = append(parts, id[:i+1]), id[i+1:]
	}
	if id != "" {
		parts = append(parts, id)
	}
	return parts
}

// JSON renders dashboard.json.
func JSON(f *Fleet) ([]byte, error) {
	var compact, b bytes.Buffer
	if err := WriteJSON(&compact, f); err != nil {
		return nil, err
	}
	if err := json.Indent(&b, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteJSON writes what JSON does, compact and one device at a time: a
// 100,000-device dashboard.json is 30 MB, which the fleet need not hold
// in memory twice over to write.
func WriteJSON(w io.Writer, f *Fleet) error {
	head := *f
	head.Devices = nil
	b, err := json.Marshal(head)
	if err != nil {
		return err
	}
	prefix, ok := bytes.CutSuffix(b, []byte(`"devices":null}`))
	if !ok {
		return fmt.Errorf("dashboard JSON: devices must be the last field of Fleet")
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.Write(prefix)
	bw.WriteString(`"devices":[`)
	enc := json.NewEncoder(bw)
	for i := range f.Devices {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(&f.Devices[i]); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// storeName is the name of a store path without its hash: what a system
// is, shown first so a narrow column keeps it (the full path is the title).
func storeName(p string) string {
	base := path.Base(p)
	if h, name, ok := strings.Cut(base, "-"); ok && len(h) == 32 {
		return name
	}
	return base
}

// storeHash is the first 8 characters of a store path's hash, "" if none:
// enough to tell two builds of one name apart.
func storeHash(p string) string {
	if h, _, ok := strings.Cut(path.Base(p), "-"); ok && len(h) == 32 {
		return h[:8]
	}
	return ""
}

func pct(n, total int) int {
	if total == 0 {
		return 0
	}
	return n * 100 / total
}

func relative(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func untilText(d time.Duration) string {
	if d <= 0 {
		return "expired " + relative(-d) + " ago"
	}
	return "in " + relative(d)
}
