package status

import (
	"errors"
	"strings"
	"testing"
	"time"
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
	f.Fuzz(func(t *testing.T, id string, b []byte) {
		s, err := Parse(id, b)
		if err != nil {
			return
		}
		if s.DeviceID != id {
			t.Fatalf("accepted a blob for %q under %q", s.DeviceID, id)
		}
		for _, f := range []string{s.Channel, s.LastError, s.Note, s.StorePath, s.AgentVersion} {
			if len(f) > maxField+4 {
				t.Fatalf("field of %d bytes not capped", len(f))
			}
		}
	})
}
