package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	good := `{"deviceId":"kiosk-1","channel":"prod","state":"up-to-date","revision":3,"storePath":"/nix/store/x","needsReboot":false,"checkedAt":"2026-11-25T12:00:00Z","changedAt":"2026-11-25T11:00:00Z","agentVersion":"1.0"}`
	s, err := Parse("kiosk-1", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Revision != 3 || s.State != UpToDate || !s.CheckedAt.Equal(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("parsed %+v", s)
	}
	long, _ := Parse("kiosk-1", []byte(strings.Replace(good, `"agentVersion":"1.0"`, `"agentVersion":"1.0","lastError":"`+strings.Repeat("é", 3000)+`"`, 1)))
	if long == nil || len(long.LastError) > maxField+3 {
		t.Fatalf("long field not capped: %d bytes", len(long.LastError))
	}
	bad := []struct {
		name, id, body string
	}{
		{"empty", "kiosk-1", ``},
		{"not json", "kiosk-1", `<script>`},
		{"array", "kiosk-1", `[]`},
		{"other device", "kiosk-2", good},
		{"unknown state", "kiosk-1", strings.Replace(good, "up-to-date", "pwned", 1)},
		{"wrong type", "kiosk-1", strings.Replace(good, `"revision":3`, `"revision":"3"`, 1)},
		{"negative revision", "kiosk-1", strings.Replace(good, `"revision":3`, `"revision":-1`, 1)},
		{"oversized", "kiosk-1", good + strings.Repeat(" ", MaxSize)},
	}
	for _, c := range bad {
		if _, err := Parse(c.id, []byte(c.body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestSameFacts(t *testing.T) {
	a := Status{DeviceID: "d", State: UpToDate, Revision: 1, CheckedAt: time.Now()}
	b := a
	b.CheckedAt = b.CheckedAt.Add(time.Hour)
	if !SameFacts(a, b) {
		t.Fatal("check time alone should not count as a change")
	}
	b.Revision = 2
	if SameFacts(a, b) {
		t.Fatal("a new revision is a change")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("kiosk-1", []byte(`{"deviceId":"kiosk-1","state":"failed","lastError":"x"}`))
	f.Add("a", []byte(`{"deviceId":"a","state":"up-to-date","revision":18446744073709551615}`))
	f.Add("a", []byte("{\"deviceId\":\"a\",\"state\":\"failed\",\"lastError\":\"\u202eexe.txt\\u202e\x1b[2J\"}"))
	f.Fuzz(func(t *testing.T, id string, b []byte) {
		s, err := Parse(id, b)
		if err != nil {
			return
		}
		if s.DeviceID != id {
			t.Fatalf("accepted a blob for %q under %q", s.DeviceID, id)
		}
		for name, v := range stringFields(s) {
			if why := unclean(v, maxField); why != "" {
				t.Fatalf("field %s = %q: %s", name, v, why)
			}
		}
	})
}

// stringFields lists every string field of s by name.
func stringFields(s *Status) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		if v.Field(i).Kind() == reflect.String {
			out[v.Type().Field(i).Name] = v.Field(i).String()
		}
	}
	return out
}

// unclean says why s is not what Clean promises, or "".
func unclean(s string, limit int) string {
	if len(s) > limit {
		return fmt.Sprintf("%d bytes, limit %d", len(s), limit)
	}
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == 0x2028 || r == 0x2029 {
			return fmt.Sprintf("contains %U", r)
		}
	}
	return ""
}

// hostile is text a compromised device might write: terminal escapes,
// every bidi control, zero-width and other invisible characters, line
// breaks and invalid UTF-8.
const hostile = "ok\x1b[31mred\x1b]0;title\x07\u009b2J" +
	"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f\ufeff\u061c\u2060\U000e0041\u00ad" +
	"line\nbreak\r\u2028\u2029\u0085tab\t\x00\x7f\xff end"

func TestClean(t *testing.T) {
	for _, c := range []struct {
		in    string
		limit int
		want  string
	}{
		{"plain text", 100, "plain text"},
		{hostile, 100, "ok[31mred]0;title2Jline break    tab � end"},
		{"evil\u202eexe.txt", 100, "evilexe.txt"},
		{"a\u200bdmin", 100, "admin"},
		{"\ufeffbom", 100, "bom"},
		{"x\ny", 100, "x y"},
		{"abcdef", 5, "ab…"},
		{"abcdef", 6, "abcdef"},
		{"éééé", 6, "é…"},
		{"abcdef", 2, "ab"},
		{"éé", 3, "…"},
		{"abc", 0, ""},
		{"abc", -1, ""},
		{"\u202e\u202e\u202eab", 2, "ab"},
	} {
		if got := Clean(c.in, c.limit); got != c.want {
			t.Errorf("Clean(%q, %d) = %q, want %q", c.in, c.limit, got, c.want)
		}
	}
}

func FuzzClean(f *testing.F) {
	f.Add(hostile, 40)
	f.Add("éééé", 6)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit %= 4096
		got := Clean(s, limit)
		if why := unclean(got, max(limit, 0)); why != "" {
			t.Fatalf("Clean(%q, %d) = %q: %s", s, limit, got, why)
		}
		if again := Clean(got, limit); again != got {
			t.Fatalf("not idempotent: %q then %q", got, again)
		}
		if unclean(s, limit) == "" && got != s {
			t.Fatalf("changed clean text %q to %q", s, got)
		}
	})
}

// TestParseCleansEveryField: hostile text in every string field of a blob
// comes out clean; in the id or state it makes the blob invalid.
func TestParseCleansEveryField(t *testing.T) {
	st := Status{DeviceID: "kiosk-1", State: Failed}
	v := reflect.ValueOf(&st).Elem()
	n := 0
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String && f.String() == "" {
			f.SetString(hostile + strings.Repeat("x", 1200))
			n++
		}
	}
	if n < 8 {
		t.Fatalf("only %d string fields set", n)
	}
	blob, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse("kiosk-1", blob)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range stringFields(s) {
		if why := unclean(v, maxField); why != "" {
			t.Errorf("%s: %s", name, why)
		}
	}
	for name, c := range map[string]struct{ id, blob string }{
		"bidi in the blob's id":   {"kiosk-1", `{"deviceId":"kiosk-1\u202e","state":"failed"}`},
		"bidi in the reader's id": {"kiosk-1\u202e", `{"deviceId":"kiosk-1\u202e","state":"failed"}`},
		"bidi in the state":       {"kiosk-1", `{"deviceId":"kiosk-1","state":"failed\u200b"}`},
	} {
		_, err := Parse(c.id, []byte(c.blob))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		} else if why := unclean(err.Error(), 1000); why != "" {
			t.Errorf("%s: the error itself %q: %s", name, err, why)
		}
	}
}
