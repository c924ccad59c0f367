package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

type deviceOptions struct {
	bkt        string
	asJSON     bool
	kf         keyFlags
	tf         signTrustFlags
	allPending bool
	class      string
	key        string
	replace    bool
	noDash     bool
	pins       map[string]string // approve ID=SHA256:…
}

func deviceCmd() *command {
	o := &deviceOptions{}
	return &command{
		name:    "device",
		summary: "list, approve, add and revoke device identity keys",
		about: `Usage: nix-ota device list|approve|add|revoke [flags] [DEVICE...]
Every agent signs its check-ins with its own identity key. The device
registry (device-registry.json, signed with your publisher keys) says which
device id owns which key; status, the dashboard, rollout and publish --wait
count only check-ins signed by the registered key of the id they name, and
show everything else apart as unverified. A new device appears as pending.
  list                 registered, pending and refused devices
  approve DEVICE[=SHA256:…]...
                       register the key each named device signed its newest
                       check-in with; naming its fingerprint pins it (needed
                       for a key change or a revoked device);
                       --all-pending: every pending device
  add DEVICE --device-key ed25519:…
                       pre-register a key baked into an image
                       (nix-ota-agent identity prints it; --key ed25519:…
                       works too, --key FILE still names the signing key)
  revoke DEVICE...     remove devices; their keys are never re-admitted
                       by --all-pending
approve, add and revoke sign with --key like publish, check the registry
they change first, and refresh the dashboard (unless --no-dashboard).
--json prints the result as one JSON object on stdout.`,
		examples: `  nix-ota device list --bucket s3://fleet --public-key "$(cat fleet.pub)"
  nix-ota device approve --bucket s3://fleet --key fleet.key kiosk-lobby-01
  nix-ota device approve --bucket s3://fleet --key fleet.key --all-pending
  nix-ota device approve --bucket s3://fleet --key fleet.key kiosk-7=SHA256:3Jd9…   # a reinstalled device
  nix-ota device add --bucket s3://fleet --key fleet.key kiosk-9 --device-key ed25519:Q2F…=
  nix-ota device revoke --bucket s3://fleet --key fleet.key kiosk-stolen-3`,
		flags: func(fs *pflag.FlagSet) {
			addBucketFlag(fs, &o.bkt, "")
			fs.BoolVar(&o.asJSON, "json", false, "print the result as one JSON object on stdout")
			o.kf = addKeyFlags(fs)
			o.tf = addSignTrustFlags(fs)
			fs.BoolVar(&o.allPending, "all-pending", false, "approve: every pending device (never a key change or a revoked key)")
			fs.StringVar(&o.class, "class", "", "approve, add: the device class to register (default: the class the device reports)")
			fs.StringVar(&o.key, "device-key", "", "add: the device's public key, ed25519:BASE64")
			fs.BoolVar(&o.replace, "replace", false, "add: replace the key of a registered device")
			fs.BoolVar(&o.noDash, "no-dashboard", false, "approve, add, revoke: do not refresh the bucket's dashboard")
		},
		run: o.run,
	}
}

func (o *deviceOptions) run(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return usagef("name a subcommand: nix-ota device list|approve|add|revoke")
	}
	sub, ids := args[0], slices.Clone(args[1:])
	o.pins = map[string]string{}
	for i, arg := range ids {
		id, pin, pinned := strings.Cut(arg, "=")
		if pinned && (sub != "approve" || !strings.HasPrefix(pin, "SHA256:")) {
			return usagef("%q: only approve takes DEVICE=SHA256:… (a fingerprint device list prints)", arg)
		}
		if err := manifest.ValidateName("device id", id); err != nil {
			return usagef("%v", err)
		}
		ids[i] = id
		if pinned {
			o.pins[id] = pin
		}
	}
	switch sub {
	case "list":
		if len(ids) > 0 {
			return usagef("device list takes no device names")
		}
		return o.list(ctx, env)
	case "approve":
		if len(ids) == 0 && !o.allPending {
			return usagef("name the devices to approve, or give --all-pending (nix-ota device list shows them)")
		}
	case "add":
		o.takeDeviceKey()
		if len(ids) != 1 || o.key == "" {
			return usagef("device add takes one DEVICE and --device-key ed25519:BASE64 (nix-ota-agent identity prints it)")
		}
	case "revoke":
		if len(ids) == 0 {
			return usagef("name the devices to revoke")
		}
	default:
		return usagef("unknown subcommand %q: want list, approve, add or revoke", sub)
	}
	return o.edit(ctx, env, sub, ids)
}

// takeDeviceKey lets add read its device key from --key too, as
// "device add ID --key ed25519:…": a signing key is a file or a KMS URI,
// never a value starting with ed25519:.
func (o *deviceOptions) takeDeviceKey() {
	if o.key != "" {
		return
	}
	keys := *o.kf.keys
	for i, k := range keys {
		if strings.HasPrefix(k, manifest.DeviceKeyPrefix) {
			o.key = k
			*o.kf.keys = slices.Delete(slices.Clone(keys), i, i+1)
			return
		}
	}
}

// deviceList is device list --json.
type deviceList struct {
	Registry dashboard.RegistryInfo `json:"registry"`
	Devices  []deviceRow            `json:"devices"`
}

type deviceRow struct {
	ID           string    `json:"id"`
	Trust        string    `json:"trust"` // dashboard.Trust*: verified, pending, key-changed, ...
	Fingerprint  string    `json:"fingerprint,omitempty"`
	Key          string    `json:"key,omitempty"`
	Class        string    `json:"class,omitempty"`
	State        string    `json:"state,omitempty"`
	LastSeen     time.Time `json:"lastSeen,omitzero"`
	Verification string    `json:"verification,omitempty"`
}

func (o *deviceOptions) list(ctx context.Context, env *Env) error {
	trust, err := o.readTrust(env)
	if err != nil {
		return err
	}
	s, err := openBucket(ctx, env, o.bkt, forReading)
	if err != nil {
		return err
	}
	f, err := readFleet(ctx, env, s, dashboard.Options{Trust: trust})
	if err != nil {
		return err
	}
	out := deviceList{Registry: f.Registry, Devices: []deviceRow{}}
	registered := map[string]string{} // a verified row's key is the registry's
	if c := f.Snapshot.RegistryCache; c != nil {
		for _, e := range c.Registry.Devices {
			registered[e.ID] = e.Key
		}
	}
	for _, d := range append(slices.Clone(f.Devices), f.Unverified...) {
		key := d.Key
		if d.Verified {
			key = registered[d.ID]
		}
		out.Devices = append(out.Devices, deviceRow{ID: d.ID, Trust: d.Trust, Key: key, Fingerprint: status.KeyFingerprint(key), Class: d.Class,
			State: d.Reported, LastSeen: d.CheckedAt, Verification: d.Verification})
	}
	slices.SortStableFunc(out.Devices, func(a, b deviceRow) int { return strings.Compare(a.ID, b.ID) })
	if o.asJSON {
		return writeJSON(env.Stdout, out)
	}
	printDeviceList(env.Stdout, out)
	return nil
}

func printDeviceList(w io.Writer, l deviceList) {
	switch r := l.Registry; {
	case r.Problem != "":
		fmt.Fprintf(w, "device registry: %s\n", r.Problem)
	case r.Present:
		fmt.Fprintf(w, "device registry version %d: %d registered devices\n", r.Version, r.Devices)
	default:
		fmt.Fprintln(w, "no device registry yet: statuses count by device id alone; nix-ota device approve creates it")
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tTRUST\tKEY\tSTATE\tLAST SEEN\tWHY")
	for _, d := range l.Devices {
		why := ""
		if d.Trust != dashboard.TrustVerified {
			why = d.Verification
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", oneLine(d.ID, 64), d.Trust, d.Fingerprint, oneLine(d.State, 20), dashboard.At(d.LastSeen), oneLine(why, 200))
	}
	tw.Flush()
	if n := countTrust(l.Devices, dashboard.TrustPending); n > 0 {
		fmt.Fprintf(w, "%d pending: check the fingerprints, then nix-ota device approve DEVICE… (or --all-pending)\n", n)
	}
}

func countTrust(rows []deviceRow, trust string) int {
	n := 0
	for _, r := range rows {
		if r.Trust == trust {
			n++
		}
	}
	return n
}

// readTrust is the trust device list checks the registry with: the
// --public-key keys (or $NIX_OTA_PUBLIC_KEY), else none.
func (o *deviceOptions) readTrust(env *Env) (*manifest.Trust, error) {
	keys, err := parsePublicKeys(*o.tf.keys, envPublicKeys(env))
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	t := manifest.Trust{Keys: keys, Threshold: *o.tf.threshold}
	if err := t.Check(); err != nil {
		return nil, usageError{err}
	}
	return &t, nil
}

// deviceEdit is device approve/add/revoke --json.
type deviceEdit struct {
	Version uint64         `json:"registryVersion"`
	Changes []deviceChange `json:"changes"`
}

// edit plans a registry change on the verified current registry, signs it
// and writes it with compare-and-swap, planning again if another writer
// got there first.
func (o *deviceOptions) edit(ctx context.Context, env *Env, sub string, ids []string) error {
	keys, err := o.kf.load(ctx, env)
	if err != nil {
		return err
	}
	extra, err := parsePublicKeys(*o.tf.keys, envPublicKeys(env))
	if err != nil {
		return err
	}
	trust, err := signing.Trust(keys, extra, *o.tf.threshold)
	if err != nil {
		return usageError{err}
	}
	s, err := openBucket(ctx, env, o.bkt, forWriting)
	if err != nil {
		return err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return err
	}
	f, err := readFleet(ctx, env, s, dashboard.Options{Trust: &trust})
	if err != nil {
		return err
	}
	for range 10 {
		res, err := o.editOnce(ctx, s, f, trust, keys, sub, ids)
		if errors.Is(err, bucket.ErrChanged) || errors.Is(err, bucket.ErrExists) {
			continue
		}
		if err != nil {
			return err
		}
		return o.report(ctx, env, s, trust, res)
	}
	return fmt.Errorf("write %s: it kept changing under concurrent writers; try again", bucket.RegistryPrefix)
}

func (o *deviceOptions) editOnce(ctx context.Context, s bucket.Store, f *dashboard.Fleet, trust manifest.Trust, keys []signing.Key, sub string, ids []string) (*deviceEdit, error) {
	reg, _, err := dashboard.ReadRegistry(ctx, s, &trust, f.Snapshot.Registry, nil)
	if err != nil {
		return nil, err
	}
	var cur *manifest.Registry
	switch {
	case reg.Verified != nil:
		cur = reg.Verified.Registry
	case reg.Problem != "" && !reg.Gone: // a vanished registry is started again after what was read
		return nil, fmt.Errorf("%s; nothing was signed", reg.Problem)
	}
	base, now := f.Snapshot.Registry.Version, time.Now()
	var next *manifest.Registry
	var changes []deviceChange
	switch sub {
	case "approve":
		next, changes, err = planApprove(cur, base, f, ids, o.allPending, o.class, o.pins, now)
	case "add":
		next, changes, err = planAdd(cur, base, ids[0], o.key, o.class, o.replace, now)
	case "revoke":
		next, changes, err = planRevoke(cur, base, ids, now)
	}
	if err != nil || next == nil {
		return &deviceEdit{Version: base, Changes: changes}, err
	}
	body, err := signing.SignRegistry(ctx, next, keys...)
	if err != nil {
		return nil, err
	}
	// What is written must verify as readers will verify it.
	if _, err := manifest.CheckRegistry(trust, body, f.Snapshot.Registry); err != nil {
		return nil, fmt.Errorf("the registry just signed does not verify (%v); nothing was written", err)
	}
	// Create-only: a concurrent writer of the same version wins, and this
	// one plans again on top of it.
	opts := bucket.JSONPut()
	opts.CreateOnly = true
	if _, err := bucket.PutBytes(ctx, s, bucket.RegistryVersionKey(next.Version), body, opts); err != nil {
		return nil, err
	}
	pruneRegistry(ctx, s, next.Version)
	return &deviceEdit{Version: next.Version, Changes: changes}, nil
}

// keepRegistryVersions is how many registry versions stay in the bucket:
// readers need only the newest, the others are for an operator looking
// back. Each is the whole registry (16 MB at 100,000 devices).
const keepRegistryVersions = 10

// pruneRegistry deletes versions older than the newest keepRegistryVersions;
// a failure only leaves them for the next edit.
func pruneRegistry(ctx context.Context, s bucket.Store, newest uint64) {
	var old []string
	_ = s.List(ctx, bucket.RegistryPrefix, func(i bucket.Info) error {
		if v, ok := bucket.ParseRegistryVersionKey(i.Key); ok && v+keepRegistryVersions <= newest {
			old = append(old, i.Key)
		}
		return nil
	})
	_, _ = bucket.DeleteAll(ctx, s, old)
}

func (o *deviceOptions) report(ctx context.Context, env *Env, s bucket.Store, trust manifest.Trust, res *deviceEdit) error {
	if res.Changes == nil {
		res.Changes = []deviceChange{}
	}
	if !o.noDash && len(res.Changes) > 0 {
		if _, _, err := regenerate(ctx, env, s, dashSpec{trust: &trust}); err != nil {
			fmt.Fprintf(env.Stderr, "warning: the registry is written but the dashboard was not refreshed: %s (run nix-ota dashboard)\n", oneLine(err.Error(), 300))
		}
	}
	if o.asJSON {
		return writeJSON(env.Stdout, res)
	}
	if len(res.Changes) == 0 {
		fmt.Fprintln(env.Stdout, "no pending device to approve")
		return nil
	}
	for _, c := range res.Changes {
		fmt.Fprintf(env.Stdout, "%s %s (key %s)%s\n", c.Action, c.ID, c.Fingerprint, map[bool]string{true: ": " + c.Why, false: ""}[c.Why != ""])
	}
	fmt.Fprintf(env.Stdout, "device registry is at version %d\n", res.Version)
	return nil
}
