package cli

import (
	"io"
	"os"

	"golang.org/x/term"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/status"
)

// palette colours words for a person at a terminal. It is on only when
// the stream is a terminal and $NO_COLOR is unset (no-color.org), so
// pipes, files, CI logs and tests get plain text.
type palette struct{ on bool }

// SGR colour codes; all two digits, so every painted word carries escapes
// of the same length and tabwriter columns stay aligned.
const (
	red    = "31"
	green  = "32"
	yellow = "33"
	plain  = "39"
)

func newPalette(env *Env, w io.Writer) palette { return terminalPalette(w, env.Getenv) }

// terminalPalette is newPalette for code that has the stream and the
// environment lookup but no Env.
func terminalPalette(w io.Writer, getenv func(string) string) palette {
	if getenv("NO_COLOR") != "" {
		return palette{}
	}
	f, ok := w.(*os.File)
	return palette{on: ok && term.IsTerminal(int(f.Fd()))}
}

func (p palette) paint(code, s string) string {
	if !p.on {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

// state paints a device state: red for failures, yellow for what needs a
// look, green when up to date. Every state is painted (plain ones with the
// default colour) so a column of them stays aligned.
func (p palette) state(s string) string {
	switch s {
	case status.Failed, status.RolledBack, status.Rejected, dashboard.Invalid:
		return p.paint(red, s)
	case dashboard.Offline, dashboard.Behind, status.WaitingReboot:
		return p.paint(yellow, s)
	case status.UpToDate:
		return p.paint(green, s)
	}
	return p.paint(plain, s)
}
