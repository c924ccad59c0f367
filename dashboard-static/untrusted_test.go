package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// invisible is every kind of character that can make text display as
// something other than what it is: bidi embeddings, overrides and
// isolates, zero-width characters, the byte-order mark, a tag character,
// a soft hyphen, line and paragraph separators, and terminal escapes.
const invisible = "evil\u202egnp.exe\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069" +
	"\u200b\u200c\u200d\u200e\u200f\ufeff\u061c\u2060\U000e0041\u00ad\u2028\u2029\u0085\x1b[31m\x00\x7f\u009b"

// hidden reports the first control or format character in s, if any; the
// page's own line breaks and indentation do not count.
func hidden(s string) (rune, bool) {
	for _, r := range s {
		if r == '\n' || r == '\t' {
			continue
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == 0x2028 || r == 0x2029 {
			return r, true
		}
	}
	return 0, false
}

// TestInvisibleCharactersStayOut: bidi and other format characters in
// every string a device writes, and in a channel's message and publisher,
// reach neither the page (read as text, character references decoded) nor
// dashboard.json.
func TestInvisibleCharactersStayOut(t *testing.T) {
	st := fileStore(t)
	signer, _ := testenv.NewSigner(t, "fleet-1")
	p := testenv.Payload("prod", 0, spA)
	p.PublishedAt, p.ExpiresAt, p.Message, p.Publisher = now.Add(-time.Hour), now.Add(720*time.Hour), invisible, invisible
	testenv.Publish(t, st, signer, p)

	s := status.Status{DeviceID: "kiosk-1", State: status.Failed, Revision: 1}
	v := reflect.ValueOf(&s).Elem()
	n := 0
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String && f.String() == "" {
			f.SetString(invisible)
			n++
		}
	}
	if n < 8 {
		t.Fatalf("only %d string fields set", n)
	}
	testenv.PutCheckin(t, st, "kiosk-1", now.Add(-time.Minute), blob(t, s))
	f := collect(t, st)
	page, err := dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	text := html.UnescapeString(string(page))
	if !strings.Contains(text, "gnp.exe") {
		t.Fatal("the device's text is not on the page at all, so this test would prove nothing")
	}
	if r, ok := hidden(text); ok {
		t.Fatalf("the page carries %U", r)
	}
	js, err := dashboard.JSON(f)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if r, ok := hidden(fmt.Sprint(doc)); ok {
		t.Fatalf("dashboard.json carries %U", r)
	}
}

// TestClockAhead: a device whose checkedAt lies beyond the allowed skew is
// shown invalid with the reason, not as a device that can never go
// offline.
func TestClockAhead(t *testing.T) {
	st := fileStore(t)
	ctx := context.Background()
	for id, at := range map[string]time.Time{
		"ahead-100y": now.AddDate(100, 0, 0),
		"ahead-11m":  now.Add(dashboard.MaxClockSkew + time.Minute),
		"ahead-5m":   now.Add(5 * time.Minute),
		"on-time":    now.Add(-time.Minute),
	} {
		s := status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: spA, CheckedAt: at}
		testenv.PutCheckin(t, st, id, at, blob(t, s))
	}
	f := collect(t, st)
	got := map[string]dashboard.Device{}
	for _, d := range f.Devices {
		got[d.ID] = d
	}
	for id, want := range map[string]string{"ahead-100y": dashboard.Invalid, "ahead-11m": dashboard.Invalid, "ahead-5m": status.UpToDate, "on-time": status.UpToDate} {
		d := got[id]
		if d.State != want {
			t.Errorf("%s: state %s, want %s (%s)", id, d.State, want, d.LastError)
		}
		if want == dashboard.Invalid && !strings.HasPrefix(d.LastError, "clock ahead") {
			t.Errorf("%s: reason %q, want clock ahead", id, d.LastError)
		}
	}
	if f.Counts.Invalid != 2 || f.Counts.Offline != 0 {
		t.Errorf("counts %+v", f.Counts)
	}
	// Even far later, the device dated 100 years ahead stays invalid rather
	// than never going offline.
	later, err := dashboard.Collect(ctx, st, dashboard.Options{Now: now.AddDate(1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range later.Devices {
		if d.ID == "ahead-100y" && d.State != dashboard.Invalid {
			t.Errorf("a year later: %s", d.State)
		}
	}
	page, err := dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `data-device="ahead-100y" data-state="invalid"`) || !strings.Contains(string(page), "clock ahead") {
		t.Fatal("the page does not show the device dated ahead as invalid with its reason")
	}
}
