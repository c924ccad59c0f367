package dashboard_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// TestIncrementalMatchesFull: a read that starts from the previous read's
// snapshot gives the same fleet as a read of every window, after devices
// changed, checked in again with the same bytes, were forgotten, went
// offline, wrote a corrupt blob or appeared; and it reads only the blobs
// that changed.
func TestIncrementalMatchesFull(t *testing.T) {
	for name, st := range fileAndMinIO(t) {
		t.Run(name, func(t *testing.T) { testIncremental(t, st) })
	}
}

func testIncremental(t *testing.T, st bucket.Store) {
	ctx := context.Background()
	s, pub := testenv.NewSigner(t, "fleet-1")
	testenv.Publish(t, st, s, testenv.Payload("prod", 0, spA))
	trust := &manifest.Trust{Keys: []manifest.PublicKey{pub}}
	dev := func(id string, state string, hb int) status.Status {
		return status.Status{DeviceID: id, Channel: "prod", State: state, Revision: 1, StorePath: spA, AgentVersion: "1.0", HeartbeatSeconds: hb}
	}
	ids := []string{"changed", "same-bytes", "forgotten", "corrupt", "goes-offline", "steady-1", "steady-2", "deleted-by-hand"}
	for _, id := range ids {
		hb := 900
		if id == "goes-offline" {
			hb = 1
		}
		testenv.PutCheckin(t, st, id, time.Now(), blob(t, dev(id, status.UpToDate, hb)))
	}
	first, err := dashboard.Collect(ctx, st, dashboard.Options{Now: time.Now(), Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Read.Full || first.Read.Fetched != len(ids) || byID(first)["goes-offline"].State == dashboard.Offline {
		t.Fatalf("first read: %+v, goes-offline %s", first.Read, byID(first)["goes-offline"].State)
	}
	snap := roundTrip(t, first.Snapshot, st.String())

	// What happens between two reads.
	oldSame, _ := bucket.LatestCheckin(ctx, st, "same-bytes")
	testenv.PutCheckin(t, st, "changed", time.Now(), blob(t, dev("changed", status.RolledBack, 900)))
	testenv.PutCheckin(t, st, "same-bytes", time.Now().Add(bucket.CheckinWindow), blob(t, dev("same-bytes", status.UpToDate, 900)))
	testenv.PutCheckin(t, st, "corrupt", time.Now(), []byte(`{"deviceId": "corrupt", "state": `))
	testenv.PutCheckin(t, st, "new", time.Now(), blob(t, dev("new", status.Failed, 900)))
	if n, err := dashboard.Forget(ctx, st, []string{"forgotten"}, time.Now()); err != nil || n != 1 {
		t.Fatalf("forget: %d check-ins deleted, %v", n, err)
	}
	later := time.Now().Add(10 * time.Second) // goes-offline misses three 1 s heartbeats

	inc, err := dashboard.Collect(ctx, st, dashboard.Options{Now: later, Snapshot: snap, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	cold, err := dashboard.Collect(ctx, st, dashboard.Options{Now: later, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	sameFleet(t, "incremental", inc, cold)
	if inc.Read.Full || inc.Read.Fetched != 3 { // changed, corrupt, new: not same-bytes
		t.Errorf("incremental read %+v, want 3 blobs read", inc.Read)
	}
	if !slices.Equal(inc.Read.Superseded, []string{oldSame.Key}) {
		t.Errorf("superseded %v, want %s", inc.Read.Superseded, oldSame.Key)
	}
	got := byID(inc)
	for id, want := range map[string]string{"changed": status.RolledBack, "same-bytes": status.UpToDate, "corrupt": dashboard.Invalid,
		"goes-offline": dashboard.Offline, "new": status.Failed, "steady-1": status.UpToDate} {
		if got[id].State != want {
			t.Errorf("%s: %s, want %s", id, got[id].State, want)
		}
	}
	if _, ok := got["forgotten"]; ok {
		t.Error("a forgotten device is still in the fleet")
	}

	// A check-in deleted by hand (not forgotten) in a window an
	// incremental read does not list shows at the next full read.
	gone, _ := bucket.LatestCheckin(ctx, st, "deleted-by-hand")
	if err := st.Delete(ctx, gone.Key); err != nil {
		t.Fatal(err)
	}
	full, err := dashboard.Collect(ctx, st, dashboard.Options{Now: later, Snapshot: inc.Snapshot, Full: true, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	cold, err = dashboard.Collect(ctx, st, dashboard.Options{Now: later, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	sameFleet(t, "full with a snapshot", full, cold)
	if !full.Read.Full || full.Read.Fetched != 0 {
		t.Errorf("full read with a snapshot: %+v, want no blob read again", full.Read)
	}
	if _, ok := byID(full)["deleted-by-hand"]; ok {
		t.Error("a full read still shows a device whose check-ins are gone")
	}
	// Forgetting is undone by checking in again.
	testenv.PutCheckin(t, st, "forgotten", time.Now().Add(time.Second), blob(t, dev("forgotten", status.UpToDate, 900)))
	back, err := dashboard.Collect(ctx, st, dashboard.Options{Now: later.Add(2 * time.Second), Snapshot: full.Snapshot, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byID(back)["forgotten"]; !ok {
		t.Error("a forgotten device that checked in again is not back")
	}
}

// sameFleet compares what two reads show: counts, channels and every row.
func sameFleet(t *testing.T, what string, a, b *dashboard.Fleet) {
	t.Helper()
	if a.Counts != b.Counts || !reflect.DeepEqual(a.ByState, b.ByState) {
		t.Errorf("%s: counts %+v %v\ncold:  %+v %v", what, a.Counts, a.ByState, b.Counts, b.ByState)
	}
	if !reflect.DeepEqual(a.Channels, b.Channels) {
		t.Errorf("%s: channels %+v\ncold: %+v", what, a.Channels, b.Channels)
	}
	if !reflect.DeepEqual(a.Devices, b.Devices) {
		t.Errorf("%s: devices differ\n%+v\ncold:\n%+v", what, a.Devices, b.Devices)
	}
}

func roundTrip(t *testing.T, s *dashboard.Snapshot, bucketURL string) *dashboard.Snapshot {
	t.Helper()
	var b bytes.Buffer
	if err := s.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := dashboard.DecodeSnapshot(&b, bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Records, s.Records) || !got.ReadAt.Equal(s.ReadAt) {
		t.Fatal("snapshot changed in an encode and decode")
	}
	return got
}

// TestDecodeSnapshotRefuses: a snapshot that is not one, is another
// bucket's or does not hold together is not used.
func TestDecodeSnapshotRefuses(t *testing.T) {
	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	rec := func(id, key string) dashboard.Record {
		return dashboard.Record{Checkin: bucket.Info{Key: key, ETag: "e"}, Device: dashboard.Device{ID: id, State: status.UpToDate}}
	}
	good := func() *dashboard.Snapshot {
		return &dashboard.Snapshot{Bucket: "file:///b", ReadAt: at, FullAt: at, Records: []dashboard.Record{
			rec("a", bucket.CheckinKey("a", at)), rec("b", bucket.CheckinKey("b", at))}}
	}
	enc := func(s *dashboard.Snapshot) []byte {
		var b bytes.Buffer
		if err := s.Encode(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if _, err := dashboard.DecodeSnapshot(bytes.NewReader(enc(good())), "file:///b"); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	unsorted := good()
	unsorted.Records[0], unsorted.Records[1] = unsorted.Records[1], unsorted.Records[0]
	dup := good()
	dup.Records[1] = dup.Records[0]
	foreign := good()
	foreign.Records[1].Checkin.Key = bucket.CheckinKey("a", at)
	badID := good()
	badID.Records = []dashboard.Record{rec("a b", bucket.CheckinKey("a b", at))}
	full := enc(good())
	for name, b := range map[string][]byte{
		"empty":          nil,
		"other magic":    []byte("nix-ota fleet snapshot 1\n" + string(full[25:])),
		"truncated":      full[:len(full)-5],
		"garbage":        append([]byte("nix-ota fleet snapshot 2\n"), bytes.Repeat([]byte{0xff}, 64)...),
		"unsorted":       enc(unsorted),
		"duplicate":      enc(dup),
		"foreign key":    enc(foreign),
		"invalid id":     enc(badID),
		"another bucket": enc(func() *dashboard.Snapshot { s := good(); s.Bucket = "file:///c"; return s }()),
	} {
		_, err := dashboard.DecodeSnapshot(bytes.NewReader(b), "file:///b")
		if !errors.Is(err, dashboard.ErrSnapshot) {
			t.Errorf("%s: %v, want ErrSnapshot", name, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
}

func FuzzDecodeSnapshot(f *testing.F) {
	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	(&dashboard.Snapshot{Bucket: "file:///b", ReadAt: at, Records: []dashboard.Record{{Checkin: bucket.Info{Key: bucket.CheckinKey("a", at)}, Device: dashboard.Device{ID: "a"}}}}).Encode(&b)
	f.Add(b.Bytes())
	f.Add([]byte("nix-ota fleet snapshot 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := dashboard.DecodeSnapshot(bytes.NewReader(data), "file:///b")
		if err != nil {
			return
		}
		for i := 1; i < len(s.Records); i++ {
			if s.Records[i-1].Device.ID >= s.Records[i].Device.ID {
				t.Fatal("accepted unsorted records")
			}
		}
	})
}

// failOnce fails the first GET of every key.
type failOnce struct {
	bucket.Store
	mu   sync.Mutex
	seen map[string]bool
}

func (f *failOnce) Get(ctx context.Context, key string, o bucket.GetOptions) (*bucket.Object, error) {
	f.mu.Lock()
	first := !f.seen[key]
	f.seen[key] = true
	f.mu.Unlock()
	if first && strings.HasPrefix(key, bucket.DevicesPrefix) {
		return nil, fmt.Errorf("%w: 503 SlowDown", bucket.ErrUnreachable)
	}
	return f.Store.Get(ctx, key, o)
}

// TestIncrementalRereads: an incremental read reads a blob again when the
// same key was rewritten within one LastModified tick, or when the last
// read of it failed; a device that reported failure is never hidden.
func TestIncrementalRereads(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	at := time.Now().Truncate(time.Second)
	dev := func(state string) []byte {
		return blob(t, status.Status{DeviceID: "d1", Channel: "prod", State: state, Revision: 1, StorePath: spA, HeartbeatSeconds: 900, CheckedAt: at})
	}
	key := testenv.PutCheckin(t, st, "d1", at, dev(status.Switching))
	first, err := dashboard.Collect(ctx, st, dashboard.Options{Now: at.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if again := testenv.PutCheckin(t, st, "d1", at, dev(status.Failed)); again != key {
		t.Fatal("not the same key")
	}
	inc, err := dashboard.Collect(ctx, st, dashboard.Options{Now: at.Add(2 * time.Second), Snapshot: first.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	if d := byID(inc)["d1"]; d.State != status.Failed || inc.Read.Fetched != 1 {
		t.Errorf("same key rewritten in the same second: %s (%d read), want failed", d.State, inc.Read.Fetched)
	}

	flaky := &failOnce{Store: st, seen: map[string]bool{}}
	cold, err := dashboard.Collect(ctx, flaky, dashboard.Options{Now: at.Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if d := byID(cold)["d1"]; d.State != dashboard.Invalid {
		t.Fatalf("failed GET: %s", d.State)
	}
	next, err := dashboard.Collect(ctx, flaky, dashboard.Options{Now: at.Add(4 * time.Second), Snapshot: cold.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	if d := byID(next)["d1"]; d.State != status.Failed || len(next.Reports()) != 1 {
		t.Errorf("after a failed GET the next read shows %s, %d report(s); want failed, 1", d.State, len(next.Reports()))
	}
}

// TestForgedLocalState: a snapshot dated ahead neither pins a device's
// row nor gets its check-in deleted, nor keeps full reads away; a
// forgotten-devices.json entry dated ahead does not hide a device.
func TestForgedLocalState(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	now := time.Now()
	key := testenv.PutCheckin(t, st, "victim", now.Add(-time.Minute), blob(t, status.Status{DeviceID: "victim", Channel: "prod", State: status.Failed, HeartbeatSeconds: 900, CheckedAt: now.Add(-time.Minute)}))
	future := now.Add(365 * 24 * time.Hour)
	forged := &dashboard.Snapshot{Bucket: st.String(), ReadAt: future, FullAt: future, Records: []dashboard.Record{{
		Checkin: bucket.Info{Key: bucket.CheckinKey("victim", future), ETag: "x", ModTime: future},
		Device:  dashboard.Device{ID: "victim", Channel: "prod", State: status.UpToDate, Reported: status.UpToDate}}}}
	f, err := dashboard.Collect(ctx, st, dashboard.Options{Now: now, Snapshot: forged})
	if err != nil {
		t.Fatal(err)
	}
	if d := byID(f)["victim"]; !f.Read.Full || d.State != status.Failed || slices.Contains(f.Read.Superseded, key) {
		t.Errorf("forged snapshot: full %v, victim %s, superseded %v", f.Read.Full, d.State, f.Read.Superseded)
	}
	doc := `{"devices": {"victim": "9999-01-01T00:00:00Z"}}`
	if _, err := bucket.PutBytes(ctx, st, dashboard.ForgottenKey, []byte(doc), bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	f, err = dashboard.Collect(ctx, st, dashboard.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byID(f)["victim"]; !ok {
		t.Error("an entry dated ahead in forgotten-devices.json hides a device")
	}
	// A head claiming millions of records costs no memory up front.
	var b bytes.Buffer
	(&dashboard.Snapshot{Bucket: "file:///b"}).Encode(&b)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	dashboard.DecodeSnapshot(bytes.NewReader(forgeHead(t, 16<<20)), "file:///b")
	runtime.ReadMemStats(&m1)
	if grew := m1.TotalAlloc - m0.TotalAlloc; grew > 64<<20 {
		t.Errorf("decoding a head that claims 16M records allocated %d MiB", grew>>20)
	}
}

// forgeHead is a snapshot whose head claims n records and holds none.
func forgeHead(t *testing.T, n int) []byte {
	var b bytes.Buffer
	b.WriteString("nix-ota fleet snapshot 2\n")
	zw, err := zstd.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	head := struct {
		Bucket         string
		ReadAt, FullAt time.Time
		Records        int
	}{"file:///b", time.Now(), time.Now(), n}
	if err := gob.NewEncoder(zw).Encode(head); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return b.Bytes()
}
