package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
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
// idle poll with nothing new writes nothing. A write that fails is logged,
// retried at the next poll and noted for the exit code (statusErr).
func (a *Agent) report(ctx context.Context, state string, lastErr error, note string) {
	now := a.now().UTC()
	st := a.statusNow(state, lastErr, note, now)
	prev := a.state.Status
	st.ChangedAt = prev.ChangedAt
	changed := !status.SameFacts(prev, st)
	if changed || st.ChangedAt.IsZero() {
		st.ChangedAt = now
	}
	if !changed && !a.heartbeatDue(now) {
		return
	}
	a.state.Status = st
	remoteErr, localErr := a.writeStatus(ctx, st)
	if remoteErr == nil {
		a.state.RemoteAt = now
	}
	a.state.RemoteStale = remoteErr != nil || localErr != nil
	if a.statusErr == nil {
		a.statusErr = firstErr(remoteErr, localErr)
	}
	if err := a.save(); err != nil {
		return // logged by save; the poll ends with ExitStateNotSaved
	}
	if changed {
		a.logf("status: %s, revision %d%s", st.State, st.Revision, map[bool]string{true: ", error: " + st.LastError, false: ""}[st.LastError != ""])
	}
}

// heartbeatDue: the status must be written even if nothing changed.
func (a *Agent) heartbeatDue(now time.Time) bool {
	return a.state.RemoteAt.IsZero() || now.Sub(a.state.RemoteAt) >= a.Config.Heartbeat.Duration || a.state.RemoteStale
}

// statusNow is the device's status as of now. Free text (errors, notes,
// cleanup output, store paths) goes through status.Clean.
func (a *Agent) statusNow(state string, lastErr error, note string, now time.Time) status.Status {
	if state == "" {
		state = status.UpToDate
	}
	st := status.Status{
		DeviceID: a.Config.DeviceID, Channel: a.Config.Channel, State: state, Note: status.Clean(note, maxText),
		AgentVersion: Version, HeartbeatSeconds: int(a.Config.Heartbeat.Seconds()), CheckedAt: now,
	}
	if a.Config.DeviceClass != "" && a.Config.DeviceClass != "default" {
		st.Class = a.Config.DeviceClass
	}
	if lastErr != nil {
		st.LastError = status.Clean(lastErr.Error(), maxText)
	}
	// Freeze protection cuts both ways: a channel nobody re-signs stops
	// being accepted. Say so while there is time (a fixed text, so the
	// warning does not count as a change at every poll).
	if exp := a.state.channel(a.Config.Channel).ExpiresAt; st.Note == "" && !exp.IsZero() && exp.Sub(now) < ExpiryWarning && exp.After(now) {
		st.Note = fmt.Sprintf("the channel manifest expires at %s; the publisher must re-sign it (nix-ota resign)", exp.UTC().Format(time.RFC3339))
	}
	st.Attempted, st.Cleanup, st.Fetch = a.state.Attempted, status.Clean(a.state.Cleanup, maxText), a.state.Fetch
	if ap := a.state.Applied; ap != nil {
		st.Revision, st.StorePath = ap.Revision, ap.StorePath
	}
	if cur, err := a.System.ProfileTarget(a.Config.Profile); err == nil && cur != "" {
		st.StorePath = cur
	}
	if booted, err := a.System.Booted(); err == nil {
		st.BootedStorePath = booted
	}
	st.StorePath, st.BootedStorePath = status.Clean(st.StorePath, maxText), status.Clean(st.BootedStorePath, maxText)
	if st.StorePath != "" {
		if nr, err := a.System.NeedsReboot(st.StorePath); err == nil {
			st.NeedsReboot = nr
		}
	}
	return st
}

// writeStatus writes the status to <state-dir>/status.json, the
// Prometheus textfile (if set) and the status bucket (if there is one).
func (a *Agent) writeStatus(ctx context.Context, st status.Status) (remoteErr, localErr error) {
	body, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err, err // a Status always marshals
	}
	body = append(body, '\n')
	if err := atomicfile.WriteFile(filepath.Join(a.Config.StateDir, "status.json"), body, 0o644); err != nil {
		localErr = fmt.Errorf("write local status: %w", err)
		a.logf("status: %v", localErr)
	}
	if a.Config.PrometheusFile != "" {
		if err := atomicfile.WriteFile(a.Config.PrometheusFile, []byte(prometheus(st)), 0o644); err != nil {
			err = fmt.Errorf("write prometheus textfile: %w", err)
			a.logf("status: %v", err)
			localErr = firstErr(localErr, err)
		}
	}
	if a.Status != nil {
		if remoteErr = a.putCheckin(ctx, st); remoteErr != nil {
			remoteErr = fmt.Errorf("%w; the next poll tries again", remoteErr)
			a.logf("status: %v", remoteErr)
		}
	}
	return remoteErr, localErr
}

// putCheckin writes st, signed, to the status bucket: one PUT.
func (a *Agent) putCheckin(ctx context.Context, st status.Status) error {
	key, blob, err := checkin(st, a.key)
	if err != nil {
		return fmt.Errorf("sign %s: %w", key, err)
	}
	pctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if _, err := bucket.PutBytes(pctx, a.Status, key, blob, bucket.JSONPut()); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, a.Status, err)
	}
	return nil
}

// checkin is the status as written to the bucket: a DSSE envelope signed
// with the device's identity key, under the check-in window of its time
// (st.CheckedAt, which the signed payload carries too, so that readers
// can refuse an old check-in written again). Each write is a new
// signature, so each heartbeat has new bytes and a new ETag.
func checkin(st status.Status, key ed25519.PrivateKey) (string, []byte, error) {
	name := bucket.CheckinKey(st.DeviceID, st.CheckedAt)
	if len(key) != ed25519.PrivateKeySize {
		return name, nil, errors.New("no identity key loaded (Agent.Load reads it)")
	}
	blob, err := status.Sign(st, key)
	return name, blob, err
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// prometheus renders the status as a node_exporter textfile, in the text
// exposition format.
func prometheus(st status.Status) string {
	var b strings.Builder
	g := func(name, help, labels string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s%s %v\n", name, help, name, name, labels, v)
	}
	g("nix_ota_revision", "Channel revision the device runs.", promLabels("channel", st.Channel), st.Revision)
	b.WriteString("# HELP nix_ota_state Current agent state (1 for the current one).\n# TYPE nix_ota_state gauge\n")
	for _, s := range status.States {
		fmt.Fprintf(&b, "nix_ota_state%s %d\n", promLabels("state", s), promBool(s == st.State))
	}
	g("nix_ota_needs_reboot", "1 when the running kernel, initrd or modules differ from the installed system's.", "", promBool(st.NeedsReboot))
	g("nix_ota_error", "1 when the last poll reported an error.", "", promBool(st.LastError != ""))
	g("nix_ota_last_check_timestamp_seconds", "When the agent last wrote its status.", "", st.CheckedAt.Unix())
	g("nix_ota_last_change_timestamp_seconds", "When the device's status last changed.", "", st.ChangedAt.Unix())
	g("nix_ota_info", "Agent version and device id.", promLabels("device", st.DeviceID, "version", st.AgentVersion), 1)
	return b.String()
}

func promBool(b bool) int {
	if b {
		return 1
	}
	return 0
}

// promEscape escapes a label value as the text exposition format wants:
// backslash, double quote and line feed, nothing else (Go's %q escapes
// more, \x00 or \u2028, which node_exporter refuses along with the whole
// file). Invalid UTF-8 becomes U+FFFD: label values must be UTF-8.
var promEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// promLabels renders {name="value",...} from name, value pairs.
func promLabels(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, pairs[i], promEscape.Replace(strings.ToValidUTF8(pairs[i+1], "\uFFFD")))
	}
	b.WriteByte('}')
	return b.String()
}
