package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
)

// ForgottenKey records the devices an operator removed from the fleet, and
// when. Removing a device deletes its check-ins, but an incremental read
// lists only recent windows and cannot see a deletion in an older one; it
// reads this one object instead, and every read drops a device whose
// newest check-in is no newer than the time it was forgotten. A device
// that checks in again afterwards is back.
const ForgottenKey = "forgotten-devices.json"

// maxForgotten bounds the object (about 150,000 entries); forget refuses
// to write more.
const maxForgotten = 8 << 20

// Forgotten maps device ids to when they were forgotten.
type Forgotten map[string]time.Time

// ReadForgotten reads the record; none is an empty one.
func ReadForgotten(ctx context.Context, s bucket.Store) (Forgotten, error) {
	obj, err := s.Get(ctx, ForgottenKey, bucket.GetOptions{MaxSize: maxForgotten})
	if errors.Is(err, bucket.ErrNotFound) {
		return Forgotten{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ForgottenKey, err)
	}
	var doc struct {
		Devices Forgotten `json:"devices"`
	}
	if err := json.Unmarshal(obj.Data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v; fix or delete it (it lists removed devices)", ForgottenKey, err)
	}
	if doc.Devices == nil {
		doc.Devices = Forgotten{}
	}
	return doc.Devices, nil
}

// dropper says which records to drop as of now: a device forgotten after
// its newest check-in. An entry dated ahead of now (more than the clock
// skew readers allow) is ignored: only a bucket writer could have made it,
// and it would hide a device that keeps checking in.
func (f Forgotten) dropper(now time.Time) func(Record) bool {
	return func(r Record) bool {
		at, ok := f[r.Device.ID]
		return ok && !r.Checkin.ModTime.After(at) && !at.After(now.Add(MaxClockSkew))
	}
}

// Forget removes devices from the fleet: it records them as forgotten at
// now (compare-and-swap, so concurrent forgets keep each other's entries),
// then deletes every check-in of theirs it finds. It returns how many
// check-ins it deleted.
func Forget(ctx context.Context, s bucket.Store, ids []string, now time.Time) (int, error) {
	if err := recordForgotten(ctx, s, ids, now); err != nil {
		return 0, err
	}
	drop := map[string]bool{}
	for _, id := range ids {
		drop[id] = true
	}
	var keys []string
	err := s.List(ctx, bucket.DevicesPrefix, func(i bucket.Info) error {
		if id, _, ok := bucket.ParseCheckinKey(i.Key); ok && drop[id] && !i.ModTime.After(now) {
			keys = append(keys, i.Key)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list check-ins: %w", err)
	}
	return bucket.DeleteAll(ctx, s, keys)
}

func recordForgotten(ctx context.Context, s bucket.Store, ids []string, now time.Time) error {
	for range 10 {
		obj, err := s.Get(ctx, ForgottenKey, bucket.GetOptions{MaxSize: maxForgotten})
		opts := bucket.JSONPut()
		doc := struct {
			Devices Forgotten `json:"devices"`
		}{Forgotten{}}
		switch {
		case errors.Is(err, bucket.ErrNotFound):
			opts.CreateOnly = true
		case err != nil:
			return fmt.Errorf("read %s: %w", ForgottenKey, err)
		default:
			if err := json.Unmarshal(obj.Data, &doc); err != nil {
				return fmt.Errorf("%s: %v; fix or delete it (it lists removed devices)", ForgottenKey, err)
			}
			opts.IfMatch = obj.ETag
		}
		if doc.Devices == nil {
			doc.Devices = Forgotten{}
		}
		for _, id := range ids {
			doc.Devices[id] = now.UTC()
		}
		b, _ := json.MarshalIndent(doc, "", "  ")
		if len(b) >= maxForgotten {
			return fmt.Errorf("%s would pass %d MiB with %d devices: delete entries of devices long gone (by hand), then forget again", ForgottenKey, maxForgotten>>20, len(doc.Devices))
		}
		_, err = bucket.PutBytes(ctx, s, ForgottenKey, append(b, '\n'), opts)
		if err == nil {
			return nil
		}
		if !errors.Is(err, bucket.ErrExists) && !errors.Is(err, bucket.ErrChanged) {
			return fmt.Errorf("write %s: %w", ForgottenKey, err)
		}
	}
	return fmt.Errorf("write %s: it kept changing under concurrent writers; try again", ForgottenKey)
}
