package agent

import (
	"testing"
	"time"
)

func TestRebootDecision(t *testing.T) {
	at := func(hm string) time.Time {
		tm, _ := time.Parse("15:04", hm)
		return time.Date(2026, 11, 25, tm.Hour(), tm.Minute(), 30, 0, time.Local)
	}
	night, _ := ParseWindow("22:00-04:00")
	day, _ := ParseWindow("02:00-03:30")
	cases := []struct {
		name         string
		needs, allow bool
		w            Window
		now          string
		want         bool
	}{
		{"kernel unchanged", false, true, Window{}, "12:00", false},
		{"reboots off", true, false, Window{}, "12:00", false},
		{"no window", true, true, Window{}, "12:00", true},
		{"day window, start edge", true, true, day, "02:00", true},
		{"day window, before", true, true, day, "01:59", false},
		{"day window, last minute", true, true, day, "03:29", true},
		{"day window, end edge", true, true, day, "03:30", false},
		{"wrapping window, late", true, true, night, "23:15", true},
		{"wrapping window, after midnight", true, true, night, "00:10", true},
		{"wrapping window, end edge", true, true, night, "04:00", false},
		{"wrapping window, noon", true, true, night, "12:00", false},
	}
	for _, c := range cases {
		got, why := RebootDecision(c.needs, c.allow, c.w, at(c.now))
		if got != c.want {
			t.Errorf("%s: reboot=%v (%s), want %v", c.name, got, why, c.want)
		}
	}
}

func TestParseWindowBad(t *testing.T) {
	for _, s := range []string{"2-3", "22:00", "25:00-01:00", "01:60-02:00", "01:00-01:00", "a:b-c:d", "1:5-2:00"} {
		if _, err := ParseWindow(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
