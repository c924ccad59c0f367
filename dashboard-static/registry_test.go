package dashboard_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

// signedFleet: prod at revision 1 (system A), a registry with kiosk-1
// and kiosk-2, both up to date and signed; returns the trust and signer.
type signedFleet struct {
	st       bucket.Store
	trust    manifest.Trust
	signer   signing.Key
	k1, k2   ed25519.PrivateKey
	intruder ed25519.PrivateKey
	at       time.Time
}

func newSignedFleet(t *testing.T) *signedFleet {
	st := fileStore(t)
	signer, pub := testenv.NewSigner(t, "fleet-1")
	p := testenv.Payload("prod", 0, spA)
	p.PublishedAt, p.ExpiresAt = now.Add(-time.Hour), now.Add(30*24*time.Hour)
	testenv.Publish(t, st, signer, p)
	f := &signedFleet{st: st, signer: signer, trust: manifest.Trust{Keys: []manifest.PublicKey{pub}}, k1: testenv.DeviceKey(1), k2: testenv.DeviceKey(2), intruder: testenv.DeviceKey(66), at: now.Add(-30 * time.Minute)}
	testenv.WriteRegistry(t, st, signer, 1, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
	f.put(t, f.k1, "kiosk-1", status.UpToDate, f.at)
	f.put(t, f.k2, "kiosk-2", status.UpToDate, f.at)
	return f
}

func (f *signedFleet) put(t *testing.T, key ed25519.PrivateKey, id, state string, at time.Time) string {
	st := status.Status{DeviceID: id, Channel: "prod", State: state, Revision: 1, StorePath: spA, AgentVersion: "2.0", ChangedAt: at}
	return testenv.PutSigned(t, f.st, key, st, at)
}

func (f *signedFleet) read(t *testing.T, snap *dashboard.Snapshot) *dashboard.Fleet {
	t.Helper()
	// Every read lists all windows: the writes below are dated before
	// now, where an incremental read would not look.
	fl, err := dashboard.Collect(context.Background(), f.st, dashboard.Options{Now: now, Trust: &f.trust, Snapshot: snap, Full: true})
	if err != nil {
		t.Fatal(err)
	}
	return fl
}

func rows(fl *dashboard.Fleet) (counted, apart map[string]dashboard.Device) {
	counted, apart = map[string]dashboard.Device{}, map[string]dashboard.Device{}
	for _, d := range fl.Devices {
		counted[d.ID] = d
	}
	for _, d := range fl.Unverified {
		apart[d.ID] = d
	}
	return counted, apart
}

func TestSignedCheckins(t *testing.T) {
	f := newSignedFleet(t)
	fl := f.read(t, nil)
	counted, apart := rows(fl)
	if len(apart) != 0 || !counted["kiosk-1"].Verified || counted["kiosk-1"].Trust != dashboard.TrustVerified || fl.Registry.Version != 1 {
		t.Fatalf("a registered, signed fleet: counted %+v, apart %+v, registry %+v", counted, apart, fl.Registry)
	}
	if p := fl.Channels[0].Progress; !p.Verified || p.Done != 2 {
		t.Fatalf("progress %+v", p)
	}

	// Another device, holding the shared check-in credential, writes
	// kiosk-2's status ("rolled-back" would halt a rollout) with its own
	// key; a new device checks in (pending); an unsigned blob appears.
	later := f.at.Add(10 * time.Minute)
	f.put(t, f.intruder, "kiosk-2", status.RolledBack, later)
	f.put(t, testenv.DeviceKey(3), "kiosk-3", status.UpToDate, later)
	testenv.PutCheckin(t, f.st, "kiosk-4", later, []byte(`{"deviceId":"kiosk-4","channel":"prod","state":"rolled-back","revision":1,"storePath":"`+spA+`","changedAt":"2026-11-25T11:00:00Z"}`))
	fl = f.read(t, fl.Snapshot)
	counted, apart = rows(fl)
	// kiosk-2 keeps its verified status, contested: its real state is
	// unknown, so it holds the step back (pending) and fails nothing.
	if d := counted["kiosk-2"]; d.Reported != status.UpToDate || !d.Verified || !d.Contested || !strings.Contains(d.Verification, "a newer check-in under its id was refused") {
		t.Errorf("kiosk-2 must keep its verified status, contested: %+v", d)
	}
	for id, trust := range map[string]string{"kiosk-2": dashboard.TrustKeyChanged, "kiosk-3": dashboard.TrustPending, "kiosk-4": dashboard.TrustUnsigned} {
		if d, ok := apart[id]; !ok || d.Trust != trust || d.Verified || d.State != dashboard.Unverified || d.Verification == "" {
			t.Errorf("%s: want unverified %s, got %+v", id, trust, d)
		}
		if _, ok := counted[id]; ok && id != "kiosk-2" {
			t.Errorf("%s counted", id)
		}
	}
	if p := fl.Channels[0].Progress; p.Failed != 0 || p.Done != 1 || p.Contested != 1 || p.Cohort != 2 {
		t.Errorf("progress after unverified check-ins: %+v, want kiosk-2 contested, nothing failed", p)
	}
	if fl.Counts.Unverified != 3 || fl.Counts.Failed != 0 {
		t.Errorf("counts %+v", fl.Counts)
	}
	// Pruning never deletes the check-in kiosk-2 still counts.
	for _, k := range fl.Read.Superseded {
		if k == bucket.CheckinKey("kiosk-2", f.at) {
			t.Errorf("the accepted check-in of kiosk-2 is marked superseded")
		}
	}
}

// TestReplay: kiosk-1's older signed status, written again later, is
// refused: by time when it was signed long before it was stored, by the
// accepted status when it was signed before that one.
func TestReplay(t *testing.T) {
	f := newSignedFleet(t)
	st := status.Status{DeviceID: "kiosk-1", Channel: "prod", State: status.Downloading, Revision: 1, StorePath: spA, AgentVersion: "2.0", CheckedAt: f.at.Add(-time.Minute)}
	old, _ := status.Sign(st, f.k1)
	fl := f.read(t, nil)
	cases := []struct {
		name, key string
		at        time.Time
		want      string
	}{
		{"same window, stored later, older than accepted", bucket.CheckinKey("kiosk-1", st.CheckedAt), f.at.Add(5 * time.Minute), "a replay"},
		{"copied to a newer window", bucket.CheckinKey("kiosk-1", f.at.Add(15*time.Minute)), f.at.Add(15 * time.Minute), "copied to another check-in"},
		{"stored long after signing", bucket.CheckinKey("kiosk-1", st.CheckedAt), f.at.Add(2 * time.Hour), "an old status written again"},
	}
	for _, c := range cases {
		if _, err := bucket.PutBytes(context.Background(), f.st, c.key, old, bucket.JSONPut()); err != nil {
			t.Fatal(err)
		}
		if err := bucket.Touch(f.st, c.key, c.at); err != nil {
			t.Fatal(err)
		}
		fl = f.read(t, fl.Snapshot)
		counted, apart := rows(fl)
		if d := apart["kiosk-1"]; d.Trust != dashboard.TrustRefused || !strings.Contains(d.Verification, c.want) {
			t.Errorf("%s: want refused (%s), got %+v", c.name, c.want, d)
		}
		if d := counted["kiosk-1"]; d.Reported != status.UpToDate || !d.Verified || !d.Contested {
			t.Errorf("%s: kiosk-1 must keep its verified status, contested, got %+v", c.name, d)
		}
		_ = f.st.Delete(context.Background(), c.key)
	}
	// Written again by the device itself, it counts again.
	f.put(t, f.k1, "kiosk-1", status.Switching, f.at.Add(20*time.Minute))
	if counted, _ := rows(f.read(t, fl.Snapshot)); counted["kiosk-1"].Reported != status.Switching {
		t.Errorf("kiosk-1's own new status: %+v", counted["kiosk-1"])
	}
}

// TestRegistryRefused: a registry the bucket holds but the publisher did
// not sign (or an older one) leaves every device unverified, with why.
func TestRegistryRefused(t *testing.T) {
	f := newSignedFleet(t)
	fl := f.read(t, nil)
	other, _ := testenv.NewSigner(t, "fleet-1")
	cases := []struct {
		name  string
		write func()
		want  string
	}{
		{"foreign-signed", func() {
			testenv.WriteRegistry(t, f.st, other, 5, testenv.Registered("kiosk-1", f.intruder), testenv.Registered("kiosk-2", f.k2))
		}, "signature not trusted"},
		{"device key swapped in the bucket", func() {
			good := testenv.WriteRegistry(t, f.st, f.signer, 6, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
			var env struct {
				PayloadType string `json:"payloadType"`
				Payload     []byte `json:"payload"`
				Signatures  []any  `json:"signatures"`
			}
			if err := json.Unmarshal(good, &env); err != nil {
				t.Fatal(err)
			}
			env.Payload = bytes.Replace(env.Payload, []byte(status.EncodeKey(f.k1.Public().(ed25519.PublicKey))), []byte(status.EncodeKey(f.intruder.Public().(ed25519.PublicKey))), 1)
			swapped, _ := json.Marshal(env)
			_, _ = bucket.PutBytes(context.Background(), f.st, bucket.RegistryVersionKey(6), swapped, bucket.JSONPut())
		}, "signature not trusted"},
		{"unsigned", func() {
			_, _ = bucket.PutBytes(context.Background(), f.st, bucket.RegistryVersionKey(9), []byte(`{"schema":1,"version":9,"devices":[]}`), bucket.JSONPut())
		}, "device registry device-registry/9.json refused"},
		{"newer name, older content", func() {
			body := testenv.WriteRegistry(t, f.st, f.signer, 1, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
			_, _ = bucket.PutBytes(context.Background(), f.st, bucket.RegistryVersionKey(12), body, bucket.JSONPut())
		}, "holds version 1"},
		{"deleted", func() { testenv.ClearRegistry(t, f.st) }, "gone from the bucket"},
	}
	for _, c := range cases {
		c.write()
		fl = f.read(t, fl.Snapshot)
		counted, apart := rows(fl)
		if len(counted) != 0 || len(apart) != 2 || !strings.Contains(fl.Registry.Problem, c.want) || !strings.Contains(apart["kiosk-1"].Verification, c.want) {
			t.Errorf("%s: counted %d, apart %d, problem %q", c.name, len(counted), len(apart), fl.Registry.Problem)
		}
		if p := fl.Channels[0].Progress; p.Done != 0 || p.Failed != 0 {
			t.Errorf("%s: progress %+v", c.name, p)
		}
	}
	// An older registry, validly signed, is a rollback for a reader that
	// read version 3.
	signer, pub := testenv.NewSigner(t, "fleet-2")
	f.trust = manifest.Trust{Keys: []manifest.PublicKey{pub}}
	testenv.ClearRegistry(t, f.st)
	testenv.WriteRegistry(t, f.st, signer, 3, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
	fl = f.read(t, nil)
	if fl.Registry.Version != 3 || len(fl.Devices) != 2 {
		t.Fatalf("version 3: %+v, %d counted", fl.Registry, len(fl.Devices))
	}
	testenv.ClearRegistry(t, f.st) // a bucket writer deletes version 3, then writes an older one
	testenv.WriteRegistry(t, f.st, signer, 2, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.intruder))
	if fl = f.read(t, fl.Snapshot); !strings.Contains(fl.Registry.Problem, "older than version 3") || len(fl.Devices) != 0 {
		t.Errorf("rollback to version 2: %+v, %d counted", fl.Registry, len(fl.Devices))
	}
}

// TestRevoke: a revoked device's statuses, old and new, stop counting.
func TestRevoke(t *testing.T) {
	f := newSignedFleet(t)
	signer, pub := testenv.NewSigner(t, "fleet-3")
	f.trust = manifest.Trust{Keys: []manifest.PublicKey{pub}}
	testenv.WriteRegistry(t, f.st, signer, 1, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
	fl := f.read(t, nil)
	testenv.WriteRegistry(t, f.st, signer, 2, testenv.Registered("kiosk-1", f.k1))
	fl = f.read(t, fl.Snapshot)
	counted, apart := rows(fl)
	if _, ok := counted["kiosk-2"]; ok || apart["kiosk-2"].Trust != dashboard.TrustPending {
		t.Errorf("revoked kiosk-2: counted %v, apart %+v", ok, apart["kiosk-2"])
	}
}

// TestNoRegistry: a bucket without a registry reads as before, and says so.
func TestNoRegistry(t *testing.T) {
	f := newSignedFleet(t)
	testenv.ClearRegistry(t, f.st)
	fl := f.read(t, nil)
	counted, apart := rows(fl)
	if len(counted) != 2 || len(apart) != 0 || fl.Registry.Present || counted["kiosk-1"].Verified || counted["kiosk-1"].Trust != dashboard.TrustPending {
		t.Errorf("no registry: counted %+v, apart %+v, registry %+v", counted, apart, fl.Registry)
	}
}

// TestChromiumUnverified: the unverified check-ins table, with markup in
// every field a device controls, as real Chromium parses the page.
func TestChromiumUnverified(t *testing.T) {
	bin := chromium(t)
	f := newSignedFleet(t)
	before := f.read(t, nil).Snapshot // a reader that accepted kiosk-2's status
	later := f.at.Add(10 * time.Minute)
	hostile := `<script>document.body.setAttribute('data-pwned','1')</script><img src=x onerror="document.body.setAttribute('data-pwned','2')">`
	st := status.Status{DeviceID: "kiosk-2", Channel: hostile, State: status.RolledBack, Revision: 1, StorePath: spA, AgentVersion: hostile, LastError: hostile, ChangedAt: later}
	testenv.PutSigned(t, f.st, f.intruder, st, later)
	st.DeviceID = "kiosk-3"
	testenv.PutSigned(t, f.st, testenv.DeviceKey(3), st, later)
	testenv.PutCheckin(t, f.st, "kiosk-4", later, []byte(`{"deviceId":"kiosk-4","state":"`+strings.ReplaceAll(hostile, `"`, `\"`)+`"}`))
	fl := f.read(t, before)
	page := writePage(t, t.TempDir(), "unverified", fl)
	dom := headless(t, bin, "--dump-dom", "file://"+page)
	if strings.Contains(dom, "data-pwned=") || strings.Contains(dom, "<script") || strings.Contains(dom, "<img") {
		t.Fatalf("injected markup became live in the DOM")
	}
	if n := strings.Count(dom, `<tr class="unverified"`); n != 3 {
		t.Fatalf("%d unverified rows in the DOM, want 3", n)
	}
	for _, want := range []string{`data-trust="key-changed"`, `data-trust="pending"`, `data-trust="refused"`, "Device registry version 1: 2 registered devices"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	// kiosk-2 still counts with its last verified status, shown signed,
	// held back in its rollout: what its real state is, nobody knows.
	row := dom[strings.Index(dom, `data-device="kiosk-2" data-state=`):]
	if row = row[:strings.Index(row, "</tr>")]; !strings.Contains(row, `data-state="behind"`) || !strings.Contains(row, ">signed<") || !strings.Contains(row, "a newer check-in under its id was refused") {
		t.Errorf("kiosk-2's row: %s", row)
	}
}

// TestRegistryCache: incremental reads use the registry the last full read
// verified while the bucket's is unchanged (asked for conditionally),
// read a changed one, and every full read verifies it anew.
func TestRegistryCache(t *testing.T) {
	f := newSignedFleet(t)
	read := func(snap *dashboard.Snapshot, at time.Time, full bool) *dashboard.Fleet {
		fl, err := dashboard.Collect(context.Background(), f.st, dashboard.Options{Now: at, Trust: &f.trust, Snapshot: snap, Full: full})
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	fl := read(nil, now, true)
	if c := fl.Snapshot.RegistryCache; c == nil || len(c.Registry.Devices) != 2 || c.ETag == "" {
		t.Fatalf("no registry cached after a full read: %+v", c)
	}
	// Whoever can write the snapshot drops kiosk-2 from the cache: an
	// incremental read believes it (it is trusted like the home directory)...
	fl.Snapshot.RegistryCache.Registry.Devices = fl.Snapshot.RegistryCache.Registry.Devices[:1]
	fl = read(roundTrip(t, fl.Snapshot, f.st.String()), now.Add(time.Minute), false)
	if counted, _ := rows(fl); len(counted) != 1 || fl.Read.Full {
		t.Fatalf("incremental read with the cached registry: %d counted, full %v", len(counted), fl.Read.Full)
	}
	// ...until the next full read verifies the bucket's registry again.
	fl = read(fl.Snapshot, now.Add(2*time.Minute), true)
	if counted, _ := rows(fl); len(counted) != 2 {
		t.Fatalf("full read: %d counted, want 2", len(counted))
	}
	// A changed registry is read at once by an incremental read.
	testenv.WriteRegistry(t, f.st, f.signer, 2, testenv.Registered("kiosk-1", f.k1))
	fl = read(fl.Snapshot, now.Add(3*time.Minute), false)
	if counted, apart := rows(fl); len(counted) != 1 || fl.Registry.Version != 2 || apart["kiosk-2"].Trust != dashboard.TrustPending {
		t.Fatalf("after a revoke: %d counted, registry %+v, kiosk-2 %+v", len(counted), fl.Registry, apart["kiosk-2"])
	}
}
