// Package dashboard builds the fleet view from a bucket (channels and
// device status blobs) and renders it as one self-contained static page,
// index.html, plus dashboard.json. The CLI alone links it.
//
// Threat model: every status blob is written by a device, and a device may
// be compromised. Blobs are read with a size limit, parsed by
// status.Parse (which refuses a blob whose id does not match its key and
// caps every string), and shown as "invalid" when anything is off; the page
// escapes everything through html/template and carries a Content Security
// Policy that allows no script at all.
package dashboard

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// The states a row shows: every device has exactly one. Agents report
// up-to-date, waiting-reboot, failed, rolled-back and rejected as they are;
// the others are derived here.
const (
	Behind   = "behind"   // healthy, but not on the system its channel's current revision wants
	Updating = "updating" // downloading or switching (the reported state is the detail)
	Offline  = "offline"  // no check-in for 3 heartbeats (the last reported state is the detail)
	Invalid  = "invalid"  // unreadable, oversized, or forged status blob
	// Unverified marks rows shown apart (Fleet.Unverified): check-ins
	// the device registry does not back. They never count.
	Unverified = "unverified"
)

// States lists every state a row can show, problems first.
var States = []string{Invalid, Unverified, status.Failed, status.RolledBack, status.Rejected, Offline, Updating, status.WaitingReboot, Behind, status.UpToDate}

// Fleet is everything the dashboard and `nix-ota status` show.
type Fleet struct {
	GeneratedAt time.Time      `json:"generatedAt"`
	Bucket      string         `json:"bucket"`
	Counts      Counts         `json:"counts"`
	ByState     map[string]int `json:"byState"` // devices per state (States)
	Channels    []Channel      `json:"channels"`
	// Unverified are check-ins the device registry does not back (Trust
	// says why): pending devices, other devices' statuses, replays. They
	// are shown apart and never counted; a device whose newest check-in
	// is here still counts in Devices with its last verified one.
	Unverified []Device `json:"unverified"`
	// Registry is the device registry's version ("" when none is used) or
	// why it could not be used.
	Registry RegistryInfo `json:"registry"`
	// Fetch sums what the devices' last updates downloaded.
	Fetch   FetchTotals `json:"fetch"`
	Devices []Device    `json:"devices"`
	// Requests is how many bucket requests Collect made (LIST pages are
	// counted once per List call).
	Requests int64 `json:"-"`
	// Read says how the devices were read; Snapshot is for the next read.
	Read     ReadStats `json:"-"`
	Snapshot *Snapshot `json:"-"`
}

// Counts are the numbers at the top of the page.
type Counts struct {
	Devices     int `json:"devices"`
	UpToDate    int `json:"upToDate"`
	Behind      int `json:"behind"`
	Updating    int `json:"updating"` // updating or waiting-reboot
	Failed      int `json:"failed"`   // failed, rolled-back or rejected
	Offline     int `json:"offline"`
	NeedsReboot int `json:"needsReboot"`
	Invalid     int `json:"invalid"`
	Unverified  int `json:"unverified"` // check-ins shown apart (Fleet.Unverified)
}

// FetchTotals sum, over the devices that report one, what their last
// update downloaded from the fleet cache and how much came as deltas.
type FetchTotals struct {
	Devices    int   `json:"devices"`    // devices reporting a fetch
	Bytes      int64 `json:"bytes"`      // downloaded: deltas and full NARs
	FullBytes  int64 `json:"fullBytes"`  // what full NARs alone would have been
	DeltaBytes int64 `json:"deltaBytes"` // of Bytes, deltas
	DeltaPaths int   `json:"deltaPaths"` // store paths rebuilt from deltas
	Fallbacks  int   `json:"fallbacks"`  // deltas that could not be used
}

// RegistryInfo says which device registry a read used.
type RegistryInfo struct {
	Present bool   `json:"present"`
	Version uint64 `json:"version,omitempty"`
	Devices int    `json:"devices"`           // registered devices
	Problem string `json:"problem,omitempty"` // why it could not be used: no device is then verified
}

// Channel is one channel's current manifest and rollout progress.
type Channel struct {
	Name        string            `json:"name"`
	Revision    uint64            `json:"revision"`
	StorePath   string            `json:"storePath,omitempty"`
	Systems     map[string]string `json:"systems,omitempty"`
	PublishedAt time.Time         `json:"publishedAt"`
	ExpiresAt   time.Time         `json:"expiresAt"`
	Rollout     int               `json:"rollout"`
	Message     string            `json:"message,omitempty"`
	Publisher   string            `json:"publisher,omitempty"`
	Signature   string            `json:"signature"` // "ok", "unverified", or why not
	Problem     string            `json:"problem,omitempty"`
	Devices     int               `json:"devices"` // devices following it (invalid blobs do not count)
	Progress    Progress          `json:"progress"`
}

// Progress is where the channel's current revision stands. Verified, it is
// channel.Step.Tally over the devices for the verified current revision
// and its run start: the rule rollout and publish --wait gate on. Without a
// trust it is counted by revision number alone and labelled unverified.
type Progress struct {
	Verified bool   `json:"verified"`
	Since    uint64 `json:"since,omitempty"` // first revision of the current system's run (verified only)
	Cohort   int    `json:"cohort"`          // devices inside the rollout
	Done     int    `json:"done"`            // unverified: on the current revision or later
	Pending  int    `json:"pending"`         // unverified: behind
	Failed   int    `json:"failed"`
	Outside  int    `json:"outside"` // following the channel, outside the rollout
	// Contested: of Pending, registered devices whose newest check-in was
	// refused; while any is, the step cannot pass.
	Contested int `json:"contested,omitempty"`
}

// Device is one device's row.
type Device struct {
	ID           string    `json:"id"`
	Channel      string    `json:"channel"`
	Class        string    `json:"class,omitempty"`
	State        string    `json:"state"`                 // exactly one of States
	Detail       string    `json:"stateDetail,omitempty"` // what the state leaves out: the reported state, why behind
	Reported     string    `json:"reportedState,omitempty"`
	Rollout      string    `json:"rollout,omitempty"` // verified channels only: outside, pending, done or failed (channel.Verdict)
	Revision     uint64    `json:"revision"`
	StorePath    string    `json:"storePath,omitempty"`
	CheckedAt    time.Time `json:"checkedAt"`
	Offline      bool      `json:"offline"`
	NeedsReboot  bool      `json:"needsReboot"`
	LastError    string    `json:"lastError,omitempty"`
	Note         string    `json:"note,omitempty"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	Attempted    uint64    `json:"attemptedRevision,omitempty"`
	// Verified: the status is signed by the key the device registry has
	// for this id (Trust and Verification say how it stands, and why).
	Verified     bool   `json:"verified"`
	Trust        string `json:"trust,omitempty"`
	Verification string `json:"verification,omitempty"`
	Key          string `json:"key,omitempty"` // the key that signed a check-in that is not verified (a verified one's is the registry's)
	// Contested: registered, but its newest check-in was refused; the row
	// is its last verified status (or a placeholder) and holds its
	// rollout step back.
	Contested bool `json:"contested,omitempty"`
	// Fetched is what its last update downloaded (nil: none reported).
	Fetched *status.Fetch `json:"fetched,omitempty"`
}

// Options tune Collect.
type Options struct {
	Now         time.Time
	Trust       *manifest.Trust // when set, signatures are checked and progress is verified
	Concurrency int             // parallel status GETs; default 32
	Channel     string          // only this channel ("" = all)
	// Snapshot is the previous read's, if the caller kept one: the devices
	// are then read incrementally (see Snapshot). Collect consumes it
	// (its records move into the new snapshot). Full lists every window
	// anyway; so does a read whose snapshot's last full read is FullEvery
	// old (default DefaultFullEvery).
	Snapshot  *Snapshot
	Full      bool
	FullEvery time.Duration
	// Steps are verified steps the caller already holds, by channel:
	// progress is measured against them and no history is read for them.
	// With Trust, the other channels' histories are loaded (channel.Load).
	Steps map[string]channel.Step
}

// DefaultHeartbeat is assumed for blobs that do not say theirs: the
// agent's default.
const DefaultHeartbeat = 8 * time.Hour

// ExpiryWarning is how close to expiry a channel is flagged.
const ExpiryWarning = 7 * 24 * time.Hour

// MaxClockSkew is how far in the future a device's checkedAt may be before
// its status is shown invalid ("clock ahead"): a blob dated years ahead
// would otherwise never count as offline.
const MaxClockSkew = 10 * time.Minute

// Collect reads a bucket: one LIST of channels/, per channel its pointer
// (with Trust: its verified history too, channel.Load), then the devices'
// check-ins: a LIST of the windows since o.Snapshot's read (all of them
// without one) and a GET of each blob not seen before (bounded
// concurrency).
func Collect(ctx context.Context, s bucket.Store, o Options) (*Fleet, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.FullEvery <= 0 {
		o.FullEvery = DefaultFullEvery
	}
	cs := &bucket.Counting{Store: s}
	f := &Fleet{GeneratedAt: o.Now.UTC(), Bucket: s.String()}
	names, err := channelNames(ctx, cs, o.Channel)
	if err != nil {
		return nil, err
	}
	steps := map[string]channel.Step{}
	for _, name := range names {
		c, step := readChannel(ctx, cs, name, o)
		f.Channels = append(f.Channels, c)
		if step != nil {
			steps[name] = *step
		}
	}
	var seen manifest.RegistryState
	var cached *CachedRegistry
	if o.Snapshot != nil && o.Snapshot.Bucket == cs.String() {
		seen = o.Snapshot.Registry // a floor, kept even when the rest is not used
	}
	if prev, full := previous(cs, o); prev != nil && !full {
		cached = prev.RegistryCache
	}
	reg, etag, err := ReadRegistry(ctx, cs, o.Trust, seen, cached)
	if err != nil {
		return nil, err
	}
	if f.Snapshot, f.Read, err = readFleet(ctx, cs, o); err != nil {
		return nil, err
	}
	f.Snapshot.Registry = seen
	if reg.Verified != nil {
		f.Snapshot.Registry = reg.Verified.State
		f.Snapshot.RegistryCache = &CachedRegistry{ETag: etag, Registry: *reg.Verified.Registry}
		f.Registry = RegistryInfo{Present: true, Version: reg.Verified.Version, Devices: len(reg.Verified.Devices)}
	}
	f.Registry.Problem = reg.Problem
	f.Registry.Present = f.Registry.Present || !reg.Absent
	f.Devices, f.Unverified = f.Snapshot.verify(reg, o.Now, o.Channel)
	f.Read.Superseded = f.Snapshot.keepAccepted(f.Read.Superseded, contestedIDs(f.Devices))
	f.Requests = cs.Requests()
	f.summarise(steps)
	return f, nil
}

// contestedIDs are the devices whose check-ins pruning must leave alone:
// registered, with a refused newest one (what it hides may be all that is
// left of the device's own status).
func contestedIDs(rows []Device) map[string]bool {
	ids := map[string]bool{}
	for _, d := range rows {
		if d.Contested {
			ids[d.ID] = true
		}
	}
	return ids
}

// channelNames lists the channel pointers (only is one name, or "" for
// all), through channel.List like every other reader of channels/.
func channelNames(ctx context.Context, s bucket.Store, only string) ([]string, error) {
	names, _, err := channel.List(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	if only != "" {
		names = slices.DeleteFunc(names, func(n string) bool { return n != only })
	}
	return names, nil
}

// readChannel describes a channel and returns the step its progress is
// measured against: the caller's, or with a trust the verified current
// revision of its history; nil when there is none (unverified progress),
// which with a trust is a problem of its own when the pointer is signed but
// replayed.
func readChannel(ctx context.Context, s bucket.Store, name string, o Options) (Channel, *channel.Step) {
	if step, ok := o.Steps[name]; ok {
		return readPointer(ctx, s, name, o), &step
	}
	if o.Trust == nil {
		return readPointer(ctx, s, name, o), nil
	}
	h, err := channel.Load(ctx, s, name, *o.Trust)
	if err == nil && h.Pointer == nil {
		err = bucket.ErrNotFound
	}
	if err != nil {
		return unreadable(name, err), nil
	}
	c := describe(name, h.Pointer.Body, o)
	cur, err := h.Current()
	if err != nil {
		if h.Head != nil { // signed, but replayed or contradicting history
			c.Problem = strings.TrimPrefix(c.Problem+"; ", "; ") + status.Clean(err.Error(), maxText)
		}
		return c, nil
	}
	step := h.StepOf(cur)
	return c, &step
}

func readPointer(ctx context.Context, s bucket.Store, name string, o Options) Channel {
	obj, err := s.Get(ctx, bucket.ChannelKey(name), bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	if err != nil {
		return unreadable(name, err)
	}
	return describe(name, obj.Data, o)
}

func unreadable(name string, err error) Channel {
	return Channel{Name: name, Signature: "-", Problem: "unreadable: " + status.Clean(err.Error(), maxText)}
}

// describe shows a channel pointer's manifest: signature checked when there
// is a trust, every string cleaned, expiry flagged.
func describe(name string, body []byte, o Options) Channel {
	c := Channel{Name: name, Signature: "unverified"}
	p, _, err := manifest.DecodeUnverified(body)
	if err != nil {
		c.Problem, c.Signature = "malformed manifest", "-"
		return c
	}
	if o.Trust != nil {
		if _, err := manifest.Verify(*o.Trust, name, manifest.State{}, body, o.Now); err != nil {
			c.Signature = "REJECTED: " + status.Clean(err.Error(), maxText)
		} else {
			c.Signature = "ok"
		}
	}
	c.Revision, c.StorePath, c.Systems = p.Revision, status.Clean(p.StorePath, maxText), cleanSystems(p.Systems)
	c.PublishedAt, c.ExpiresAt, c.Rollout = p.PublishedAt, p.ExpiresAt, p.Rollout.Percent
	c.Message, c.Publisher = status.Clean(p.Message, maxText), status.Clean(p.Publisher, maxText)
	switch left := p.ExpiresAt.Sub(o.Now); {
	case left <= 0:
		c.Problem = "expired: devices reject it; re-sign or publish"
	case left < ExpiryWarning:
		c.Problem = "expires soon: re-sign it"
	}
	return c
}

// maxText caps text from a manifest that the bucket serves: until a
// channel's signature is checked, it is as untrusted as a status blob.
const maxText = 4096

// cleanSystems cleans a manifest's class names and store paths for showing.
func cleanSystems(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for class, path := range m {
		out[status.Clean(class, 64)] = status.Clean(path, maxText)
	}
	return out
}

// rank orders rows: problems first, in the order of States.
func rank(d Device) int {
	for i, st := range States {
		if d.State == st {
			if st == status.UpToDate && !d.NeedsReboot {
				return i + 1
			}
			return i
		}
	}
	return len(States) + 1
}

// summarise gives every device its one state, counts states, measures each
// channel's progress, and sorts problems first.
func (f *Fleet) summarise(steps map[string]channel.Step) {
	byName := map[string]*Channel{}
	for i := range f.Channels {
		byName[f.Channels[i].Name] = &f.Channels[i]
	}
	f.Counts, f.ByState = Counts{Devices: len(f.Devices), Unverified: len(f.Unverified)}, map[string]int{}
	if f.Unverified == nil {
		f.Unverified = []Device{}
	}
	for i := range f.Devices {
		d := &f.Devices[i]
		ch := byName[d.Channel]
		step, verified := steps[d.Channel]
		d.settle(ch, step, verified)
		f.count(*d)
		if ch != nil && d.State != Invalid {
			ch.Devices++
			if !verified {
				countByRevision(&ch.Progress, *d, ch.Revision)
			}
		}
	}
	reports := f.Reports()
	for name, step := range steps {
		if ch := byName[name]; ch != nil {
			t := step.Tally(reports)
			ch.Progress = Progress{Verified: true, Since: step.First, Cohort: t.Cohort, Done: t.Done,
				Pending: t.Pending, Failed: t.Failed, Outside: max(ch.Devices-t.Cohort, 0), Contested: t.Contested}
		}
	}
	sort.SliceStable(f.Devices, func(i, j int) bool {
		ri, rj := rank(f.Devices[i]), rank(f.Devices[j])
		if ri != rj {
			return ri < rj
		}
		return f.Devices[i].ID < f.Devices[j].ID
	})
	sort.Slice(f.Channels, func(i, j int) bool { return f.Channels[i].Name < f.Channels[j].Name })
}

// settle gives a device its one state. Offline wins, except over a
// failure. With a verified step, the step's verdict (channel.Step.Classify)
// decides whether a healthy device is behind; without, its revision number
// does.
func (d *Device) settle(ch *Channel, step channel.Step, verified bool) {
	if d.State == Invalid {
		return
	}
	if d.State == Unverified { // a contested placeholder: nothing reported to derive from
		if verified {
			v, _ := step.Classify(d.report())
			d.Rollout = v.String()
		}
		return
	}
	v, why := channel.Outside, ""
	if verified {
		v, why = step.Classify(d.report())
		d.Rollout = v.String()
	}
	if d.Contested {
		defer func() { d.Detail = strings.TrimSuffix("a newer check-in under its id was refused; "+d.Detail, "; ") }()
	}
	switch {
	case d.Offline && Alarming(d.Reported):
		// A failure stays in sight when the device then goes quiet.
		d.State, d.Detail = d.Reported, "offline since "+At(d.CheckedAt)
	case d.Offline:
		d.State, d.Detail = Offline, "last reported "+d.Reported
	case d.Reported == status.Downloading || d.Reported == status.Switching:
		d.State, d.Detail = Updating, d.Reported
	case d.Reported == status.UpToDate && ch != nil:
		d.State, d.Detail = status.UpToDate, behind(*d, *ch, v, why, verified)
		if d.Detail != "" {
			d.State = Behind
		}
	default:
		d.State = d.Reported
	}
}

// behind says why a healthy device is not where its channel wants it, or
// "" when it is.
func behind(d Device, ch Channel, v channel.Verdict, why string, verified bool) string {
	switch {
	case verified && v == channel.Pending:
		return fmt.Sprintf("in the rollout of revision %d, not on it yet", ch.Revision)
	case verified && v == channel.Failed:
		return why
	case d.Revision >= ch.Revision || verified && v == channel.Done:
		return ""
	case verified:
		return fmt.Sprintf("outside the %d%% rollout of revision %d", ch.Rollout, ch.Revision)
	}
	return fmt.Sprintf("channel is at revision %d", ch.Revision)
}

func (f *Fleet) count(d Device) {
	f.ByState[d.State]++
	switch d.State {
	case status.UpToDate:
		f.Counts.UpToDate++
	case Behind:
		f.Counts.Behind++
	case Updating, status.WaitingReboot:
		f.Counts.Updating++
	case status.Failed, status.RolledBack, status.Rejected:
		f.Counts.Failed++
	case Offline:
		f.Counts.Offline++
	case Invalid:
		f.Counts.Invalid++
	}
	if d.NeedsReboot {
		f.Counts.NeedsReboot++
	}
	if x := d.Fetched; x != nil {
		t := &f.Fetch
		t.Devices++
		// Each count is at most status.MaxFetch (2^50): 8,000 devices at the
		// bound could still overflow a sum, so sums stop at 2^62.
		t.Bytes, t.FullBytes, t.DeltaBytes = capped(t.Bytes+x.Bytes), capped(t.FullBytes+x.FullBytes), capped(t.DeltaBytes+x.DeltaBytes)
		t.DeltaPaths, t.Fallbacks = t.DeltaPaths+x.DeltaPaths, t.Fallbacks+x.Fallbacks
	}
}

func capped(n int64) int64 { return min(n, 1<<62) }

// countByRevision is the unverified progress: a device that reports a
// failed or rolled-back update failed, one on the current revision or
// later is done (unless it rejected the manifest), the rest are pending.
// A rejection is pending, as channel.Step.Classify has it.
func countByRevision(p *Progress, d Device, rev uint64) {
	p.Cohort++
	switch {
	case d.State == status.Failed || d.State == status.RolledBack:
		p.Failed++
	case d.Revision >= rev && d.Revision > 0 && d.State != status.Rejected:
		p.Done++
	default:
		p.Pending++
	}
}

// Alarming reports whether a state belongs in the page's red banner.
func Alarming(state string) bool {
	switch state {
	case status.Failed, status.RolledBack, status.Rejected, Invalid:
		return true
	}
	return false
}
