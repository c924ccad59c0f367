package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// NewSigner makes a fresh manifest signing key.
func NewSigner(t testing.TB, name string) (signing.Key, manifest.PublicKey) {
	t.Helper()
	pemBytes, pub, err := signing.Generate(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.Load(pemBytes, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

// Payload is a valid v1 payload for tests, expiring in a day.
func Payload(ch string, rev uint64, storePath string, substituters ...string) *manifest.Payload {
	now := time.Now().UTC().Truncate(time.Second)
	if substituters == nil {
		substituters = []string{}
	}
	return &manifest.Payload{
		Schema: manifest.Schema, Channel: ch, Revision: rev, StorePath: storePath, Substituters: substituters,
		PublishedAt: now, ExpiresAt: now.Add(24 * time.Hour), Rollout: manifest.Rollout{Percent: 100, Salt: "t"},
		Switch: manifest.SwitchNow, Message: "test",
	}
}

// Publish signs p with s and publishes it the way `nix-ota publish` does;
// p.Revision is set to the revision claimed.
func Publish(t testing.TB, st bucket.Store, s signing.Key, p *manifest.Payload) uint64 {
	t.Helper()
	ctx := context.Background()
	if err := bucket.CheckLayout(ctx, st); err != nil {
		if _, err := bucket.Init(ctx, st, "test", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	res, err := PublishSigned(ctx, st, nil, p, s)
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// PublishSigned publishes p signed by signers the way `nix-ota publish`
// does, building on what trust verifies in the channel (nil: the signers'
// own keys). p.Revision is set to the revision claimed.
func PublishSigned(ctx context.Context, st bucket.Store, trust *manifest.Trust, p *manifest.Payload, signers ...signing.Key) (channel.Result, error) {
	if trust == nil {
		t, err := signing.Trust(signers, nil, 0)
		if err != nil {
			return channel.Result{}, err
		}
		trust = &t
	}
	h, err := channel.Load(ctx, st, p.Channel, *trust)
	if err != nil {
		return channel.Result{}, err
	}
	res, err := channel.Publish(ctx, st, h, channel.NewDraft(*p, 0), func(q *manifest.Payload) ([]byte, error) {
		return signing.Sign(ctx, q, signers...)
	})
	if err == nil {
		p.Revision = res.Revision
	}
	return res, err
}

// SignRaw signs arbitrary payload bytes without any validation: a
// publisher gone wrong, or a stolen key used carelessly.
func SignRaw(t testing.TB, s signing.Key, payload []byte) []byte {
	t.Helper()
	b, err := signing.SignRaw(context.Background(), payload, s)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer // one line, so tests can edit it with bytes.Replace
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	return compact.Bytes()
}

// MustJSON marshals v or fails.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// UploadDir copies every file under dir into st below prefix, the way a
// binary cache directory is put into a bucket.
func UploadDir(t testing.TB, st bucket.Store, prefix, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n++
		_, err = bucket.PutBytes(context.Background(), st, prefix+filepath.ToSlash(rel), b, bucket.PutOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
