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
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// Derived device states, beyond the ones agents report.
const (
	Behind  = "behind"  // up to date with an older revision than the channel's
	Offline = "offline" // no check-in for 3 heartbeats
	Invalid = "invalid" // unreadable, oversized, or forged status blob
)

// Fleet is everything the dashboard and `nix-ota status` show.
type Fleet struct {
	GeneratedAt time.Time `json:"generatedAt"`
	Bucket      string    `json:"bucket"`
	Counts      Counts    `json:"counts"`
	Channels    []Channel `json:"channels"`
	Devices     []Device  `json:"devices"`
	// Requests is how many bucket requests Collect made (LIST pages are
	// counted once per List call).
	Requests int64 `json:"-"`
}

// Counts are the numbers at the top of the page.
type Counts struct {
	Devices     int `json:"devices"`
	UpToDate    int `json:"upToDate"`
	Behind      int `json:"behind"`
	Updating    int `json:"updating"`
	Failed      int `json:"failed"`
	Offline     int `json:"offline"`
	NeedsReboot int `json:"needsReboot"`
	Invalid     int `json:"invalid"`
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
	Devices     int               `json:"devices"`
	Current     int               `json:"current"` // on this revision
	BehindN     int               `json:"behind"`
	FailedN     int               `json:"failed"`
}

// Device is one device's row.
type Device struct {
	ID           string    `json:"id"`
	Channel      string    `json:"channel"`
	Class        string    `json:"class,omitempty"`
	State        string    `json:"state"` // reported state, or behind/offline/invalid
	Reported     string    `json:"reportedState,omitempty"`
	Revision     uint64    `json:"revision"`
	StorePath    string    `json:"storePath,omitempty"`
	CheckedAt    time.Time `json:"checkedAt"`
	Offline      bool      `json:"offline"`
	NeedsReboot  bool      `json:"needsReboot"`
	LastError    string    `json:"lastError,omitempty"`
	Note         string    `json:"note,omitempty"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	Attempted    uint64    `json:"attemptedRevision,omitempty"`
}

// Options tune Collect.
type Options struct {
	Now         time.Time
	Trust       *manifest.Trust // when set, each channel's signature is checked
	Concurrency int             // parallel status GETs; default 16
	Channel     string          // only this channel ("" = all)
}

// DefaultHeartbeat is assumed for blobs that do not say theirs.
const DefaultHeartbeat = 15 * time.Minute

// ExpiryWarning is how close to expiry a channel is flagged.
const ExpiryWarning = 7 * 24 * time.Hour

// MaxClockSkew is how far in the future a device's checkedAt may be before
// its status is shown invalid ("clock ahead"): a blob dated years ahead
// would otherwise never count as offline.
const MaxClockSkew = 10 * time.Minute

// Collect reads a bucket: one LIST of channels/, one GET per channel
// pointer, one LIST of devices/, one GET per device (bounded concurrency).
func Collect(ctx context.Context, s bucket.Store, o Options) (*Fleet, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	f := &Fleet{GeneratedAt: o.Now.UTC(), Bucket: s.String()}
	var reqs atomic.Int64

	var names []string
	reqs.Add(1)
	err := s.List(ctx, bucket.ChannelsPrefix, func(i bucket.Info) error {
		name, ok := strings.CutSuffix(strings.TrimPrefix(i.Key, bucket.ChannelsPrefix), ".json")
		if ok && !strings.Contains(name, "/") && manifest.ValidateName("channel", name) == nil && (o.Channel == "" || o.Channel == name) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	for _, name := range names {
		reqs.Add(1)
		f.Channels = append(f.Channels, readChannel(ctx, s, name, o))
	}

	var keys []string
	reqs.Add(1)
	err = s.List(ctx, bucket.DevicesPrefix, func(i bucket.Info) error {
		if strings.HasSuffix(i.Key, "/"+bucket.StatusName) {
			keys = append(keys, i.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	f.Devices = make([]Device, len(keys))
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(o.Concurrency, max(len(keys), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				reqs.Add(1)
				f.Devices[i] = readDevice(ctx, s, keys[i], o.Now)
			}
		}()
	}
	for i := range keys {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.Channel != "" {
		kept := f.Devices[:0]
		for _, d := range f.Devices {
			if d.Channel == o.Channel {
				kept = append(kept, d)
			}
		}
		f.Devices = kept
	}
	f.Requests = reqs.Load()
	f.summarise()
	return f, nil
}

func readChannel(ctx context.Context, s bucket.Store, name string, o Options) Channel {
	c := Channel{Name: name, Signature: "unverified"}
	obj, err := s.Get(ctx, bucket.ChannelKey(name), bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	if err != nil {
		c.Problem, c.Signature = "unreadable: "+status.Clean(err.Error(), maxText), "-"
		return c
	}
	p, _, err := manifest.DecodeUnverified(obj.Data)
	if err != nil {
		c.Problem, c.Signature = "malformed manifest", "-"
		return c
	}
	if o.Trust != nil {
		if _, err := manifest.Verify(*o.Trust, name, manifest.State{}, obj.Data, o.Now); err != nil {
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

func readDevice(ctx context.Context, s bucket.Store, key string, now time.Time) Device {
	id := strings.TrimSuffix(strings.TrimPrefix(key, bucket.DevicesPrefix), "/"+bucket.StatusName)
	d := Device{ID: id, State: Invalid}
	if err := manifest.ValidateName("device id", id); err != nil {
		d.LastError = "status blob under an invalid device id"
		return d
	}
	obj, err := s.Get(ctx, key, bucket.GetOptions{MaxSize: status.MaxSize})
	if err != nil {
		if errors.Is(err, bucket.ErrTooLarge) {
			d.LastError = "status blob too large"
		} else {
			d.LastError = "unreadable status blob: " + status.Clean(err.Error(), 1024)
		}
		return d
	}
	st, err := status.Parse(id, obj.Data)
	if err != nil {
		d.LastError = err.Error()
		return d
	}
	d = Device{ID: id, Channel: st.Channel, Class: st.Class, State: st.State, Reported: st.State, Revision: st.Revision,
		StorePath: st.StorePath, CheckedAt: st.CheckedAt, NeedsReboot: st.NeedsReboot, LastError: st.LastError,
		Note: st.Note, AgentVersion: st.AgentVersion, Attempted: st.Attempted}
	if ahead := st.CheckedAt.Sub(now); ahead > MaxClockSkew {
		d.State = Invalid
		d.LastError = fmt.Sprintf("clock ahead: checked in at %s, %s after this clock (allowed skew %s); fix the device's clock", st.CheckedAt.UTC().Format(time.RFC3339), ahead.Round(time.Second), MaxClockSkew)
		return d
	}
	hb := time.Duration(st.HeartbeatSeconds) * time.Second
	if hb <= 0 {
		hb = DefaultHeartbeat
	}
	d.Offline = now.Sub(st.CheckedAt) > 3*hb
	return d
}

// rank orders rows: problems first.
func rank(d Device) int {
	switch {
	case d.State == Invalid:
		return 0
	case d.State == status.Failed, d.State == status.RolledBack, d.State == status.Rejected:
		return 1
	case d.State == Offline:
		return 2
	case d.State == status.Downloading, d.State == status.Switching, d.State == status.WaitingReboot:
		return 3
	case d.State == Behind:
		return 4
	case d.NeedsReboot:
		return 5
	}
	return 6
}

// summarise derives behind/offline states, per-channel progress and the
// counts, and sorts problems first.
func (f *Fleet) summarise() {
	byName := map[string]*Channel{}
	for i := range f.Channels {
		byName[f.Channels[i].Name] = &f.Channels[i]
	}
	f.Counts = Counts{Devices: len(f.Devices)}
	for i := range f.Devices {
		d := &f.Devices[i]
		ch := byName[d.Channel]
		if d.State == status.UpToDate && ch != nil && d.Revision < ch.Revision {
			d.State = Behind
		}
		if d.Offline && d.State != Invalid {
			d.State = Offline
		}
		switch d.State {
		case status.UpToDate:
			f.Counts.UpToDate++
		case Behind:
			f.Counts.Behind++
		case status.Downloading, status.Switching, status.WaitingReboot:
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
		if ch == nil {
			continue
		}
		ch.Devices++
		switch {
		case d.Revision >= ch.Revision && d.State != Invalid && d.Revision > 0:
			ch.Current++
		case d.State == status.Failed || d.State == status.RolledBack || d.State == status.Rejected:
			ch.FailedN++
		default:
			ch.BehindN++
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
