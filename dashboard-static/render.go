package dashboard

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"path"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/status"
)

//go:embed index.html.tmpl
var pageSource string

var page = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"short":    shortPath,
	"pct":      pct,
	"word":     word,
	"problems": func(c Counts) int { return c.Failed + c.Offline + c.Invalid + c.NeedsReboot },
	// Replaced per render with the fleet's generation time as "now".
	"ago":   func(time.Time) string { return "" },
	"until": func(time.Time) string { return "" },
}).Parse(pageSource))

// RefreshSeconds is how often the page reloads itself.
const RefreshSeconds = 60

// MaxRows caps the device table: rows are sorted problems first, so the
// page keeps every device that needs attention up to the cap and stays
// light enough for a phone; dashboard.json always has every device.
const MaxRows = 2000

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
	if err := t.Execute(&b, struct {
		F           *Fleet
		Rows        []Device
		Hidden      int
		Refresh     int
		SkewMinutes int
	}{f, rows, hidden, RefreshSeconds, int(MaxClockSkew / time.Minute)}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// JSON renders dashboard.json.
func JSON(f *Fleet) ([]byte, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	return append(b, '\n'), err
}

// shortPath shows /nix/store/abcdefgh…-name as "abcdefgh-name".
func shortPath(p string) string {
	base := path.Base(p)
	if h, name, ok := strings.Cut(base, "-"); ok && len(h) == 32 {
		return h[:8] + "…-" + name
	}
	return base
}

func pct(n, total int) int {
	if total == 0 {
		return 0
	}
	return n * 100 / total
}

// word is the state as a word, so colour is never the only signal.
func word(s string) string {
	switch s {
	case status.UpToDate:
		return "up to date"
	case status.WaitingReboot:
		return "waiting for reboot"
	case status.RolledBack:
		return "rolled back"
	}
	return s
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
