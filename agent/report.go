package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/status"
)

// ExpiryWarning is how long before the accepted manifest expires the
// status starts warning about it.
const ExpiryWarning = 7 * 24 * time.Hour

// report builds the device's status and writes it (bucket, local file,
// Prometheus textfile) when its facts changed or a heartbeat is due; an
// idle poll with nothing new writes nothing.
func (a *Agent) report(ctx context.Context, state string, lastErr error, note string) {
	if state == "" {
		state = status.UpToDate
	}
	now := a.now().UTC()
	st := status.Status{
		DeviceID: a.Config.DeviceID, Channel: a.Config.Channel, State: state, Note: note,
		AgentVersion: Version, HeartbeatSeconds: int(a.Config.Heartbeat.Seconds()), CheckedAt: now,
	}
	if a.Config.DeviceClass != "" && a.Config.DeviceClass != "default" {
		st.Class = a.Config.DeviceClass
	}
	if lastErr != nil {
		st.LastError = oneLine(lastErr.Error())
	}
	// Freeze protection cuts both ways: a channel nobody re-signs stops
	// being accepted. Say so while there is time (a fixed text, so the
	// warning does not count as a change at every poll).
	if exp := a.state.channel(a.Config.Channel).ExpiresAt; st.Note == "" && !exp.IsZero() && exp.Sub(now) < ExpiryWarning && exp.After(now) {
		st.Note = fmt.Sprintf("the channel manifest expires at %s; the publisher must re-sign it (nix-ota resign)", exp.UTC().Format(time.RFC3339))
	}
	st.Attempted, st.Cleanup = a.state.Attempted, a.state.Cleanup
	if ap := a.state.Applied; ap != nil {
		st.Revision, st.StorePath = ap.Revision, ap.StorePath
	}
	if cur, err := a.System.ProfileTarget(a.Config.Profile); err == nil && cur != "" {
		st.StorePath = cur
	}
	if booted, err := a.System.Booted(); err == nil {
		st.BootedStorePath = booted
	}
	if st.StorePath != "" {
		if nr, err := a.System.NeedsReboot(st.StorePath); err == nil {
			st.NeedsReboot = nr
		}
	}
	prev := a.state.Status
	st.ChangedAt = prev.ChangedAt
	changed := !status.SameFacts(prev, st)
	if changed || st.ChangedAt.IsZero() {
		st.ChangedAt = now
	}
	heartbeat := a.state.RemoteAt.IsZero() || now.Sub(a.state.RemoteAt) >= a.Config.Heartbeat.Duration || a.state.RemoteStale
	if !changed && !heartbeat {
		return
	}
	a.state.Status = st
	body, _ := json.MarshalIndent(st, "", "  ")
	body = append(body, '\n')
	if err := atomicfile.WriteFile(filepath.Join(a.Config.StateDir, "status.json"), body, 0o644); err != nil {
		a.logf("status: write local status: %v", err)
	}
	if a.Config.PrometheusFile != "" {
		if err := atomicfile.WriteFile(a.Config.PrometheusFile, []byte(prometheus(st)), 0o644); err != nil {
			a.logf("status: write prometheus textfile: %v", err)
		}
	}
	if a.Status != nil {
		pctx, cancel := context.WithTimeout(ctx, RequestTimeout)
		_, err := bucket.PutBytes(pctx, a.Status, bucket.StatusKey(a.Config.DeviceID), body, bucket.JSONPut())
		cancel()
		if err != nil {
			// The next poll tries again.
			a.logf("status: write %s to %s: %v", bucket.StatusKey(a.Config.DeviceID), a.Status, err)
			a.state.RemoteStale = true
			a.save()
			return
		}
		a.state.RemoteAt, a.state.RemoteStale = now, false
	}
	if a.Status == nil {
		a.state.RemoteAt = now
	}
	a.save()
	if changed {
		a.logf("status: %s, revision %d%s", st.State, st.Revision, map[bool]string{true: ", error: " + st.LastError, false: ""}[st.LastError != ""])
	}
}

// prometheus renders the status as a node_exporter textfile.
func prometheus(st status.Status) string {
	var b strings.Builder
	g := func(name, help, labels string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s%s %v\n", name, help, name, name, labels, v)
	}
	ch := fmt.Sprintf("{channel=%q}", st.Channel)
	g("nix_ota_revision", "Channel revision the device runs.", ch, st.Revision)
	b.WriteString("# HELP nix_ota_state Current agent state (1 for the current one).\n# TYPE nix_ota_state gauge\n")
	for _, s := range status.States {
		v := 0
		if s == st.State {
			v = 1
		}
		fmt.Fprintf(&b, "nix_ota_state{state=%q} %d\n", s, v)
	}
	nr := 0
	if st.NeedsReboot {
		nr = 1
	}
	g("nix_ota_needs_reboot", "1 when the running kernel, initrd or modules differ from the installed system's.", "", nr)
	hasErr := 0
	if st.LastError != "" {
		hasErr = 1
	}
	g("nix_ota_error", "1 when the last poll reported an error.", "", hasErr)
	g("nix_ota_last_check_timestamp_seconds", "When the agent last wrote its status.", "", st.CheckedAt.Unix())
	g("nix_ota_last_change_timestamp_seconds", "When the device's status last changed.", "", st.ChangedAt.Unix())
	g("nix_ota_info", "Agent version and device id.", fmt.Sprintf("{device=%q,version=%q}", st.DeviceID, st.AgentVersion), 1)
	return b.String()
}
