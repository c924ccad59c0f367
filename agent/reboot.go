package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a daily local-time window "HH:MM-HH:MM" in which the agent may
// reboot a device; it may wrap midnight ("22:00-04:00"). The zero Window
// allows any time.
type Window struct {
	start, end int // minutes after midnight
	set        bool
}

// ParseWindow parses "HH:MM-HH:MM"; "" is the zero (always) window.
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("reboot window %q: want HH:MM-HH:MM", s)
	}
	start, err := clock(a)
	if err != nil {
		return Window{}, fmt.Errorf("reboot window %q: %v", s, err)
	}
	end, err := clock(b)
	if err != nil {
		return Window{}, fmt.Errorf("reboot window %q: %v", s, err)
	}
	if start == end {
		return Window{}, fmt.Errorf("reboot window %q is empty", s)
	}
	return Window{start: start, end: end, set: true}, nil
}

func clock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return hh*60 + mm, nil
}

// Contains reports whether t (in its own location: pass local time) falls
// in the window; the start minute is inside, the end minute is not.
func (w Window) Contains(t time.Time) bool {
	if !w.set {
		return true
	}
	m := t.Hour()*60 + t.Minute()
	if w.start < w.end {
		return m >= w.start && m < w.end
	}
	return m >= w.start || m < w.end // wraps midnight
}

// RebootDecision is the pure reboot policy: reboot only when the new
// system needs it, the device allows reboots, and the clock is inside the
// window.
func RebootDecision(needsReboot, allow bool, w Window, now time.Time) (reboot bool, why string) {
	switch {
	case !needsReboot:
		return false, ""
	case !allow:
		return false, "reboot needed to activate the new kernel or initrd; automatic reboots are off (allowReboot)"
	case !w.Contains(now):
		return false, "reboot needed; waiting for the reboot window"
	}
	return true, "rebooting into the new system"
}
