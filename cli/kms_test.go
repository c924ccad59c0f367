package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature/kms/fake"

	"github.com/nix-ota/nix-ota/manifest"
)

// TestKMSSigning signs through sigstore's KMS registry with its fake
// provider (fakekms://, registered by this test only), in process so the
// test can hand the provider its key; devices verify the ECDSA P-256
// signature, alone and together with an ed25519 key (threshold 2).
func TestKMSSigning(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), fake.KmsCtxKey{}, priv)
	dir := t.TempDir()
	bucketURL := "file://" + filepath.Join(dir, "bucket")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(ctx, args, &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
		return code, out.String(), errb.String()
	}
	code, kmsPub, stderr := run("pubkey", "--key", "fleet-kms=fakekms://fleet")
	kmsPub = strings.TrimSpace(kmsPub)
	if code != 0 || !strings.HasPrefix(kmsPub, "fleet-kms:ecdsa-p256:") {
		t.Fatalf("pubkey of a KMS key: %d %q %s", code, kmsPub, stderr)
	}
	if code, _, stderr := run("init", "--bucket", bucketURL); code != 0 {
		t.Fatal(stderr)
	}
	sp := "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
	if code, _, stderr := run("publish", "--skip-closure-check", "--bucket", bucketURL, "--key", "fleet-kms=fakekms://fleet", "--channel", "prod", "--store-path", sp); code != 0 {
		t.Fatalf("publish with a KMS key: %s", stderr)
	}
	if code, out, stderr := run("verify", "--bucket", bucketURL, "--channel", "prod", "--public-key", kmsPub); code != 0 || !strings.Contains(out, "signed by fleet-kms") {
		t.Fatalf("verify a KMS-signed manifest: %d %s %s", code, out, stderr)
	}
	// A KMS key without a name is refused before any signing.
	if code, _, stderr := run("publish", "--skip-closure-check", "--bucket", bucketURL, "--key", "fakekms://fleet", "--channel", "prod", "--store-path", sp); code != ExitUsage || !strings.Contains(stderr, "needs a name") {
		t.Fatalf("unnamed KMS key: %d %s", code, stderr)
	}

	// Threshold 2: a key file and the KMS key sign together.
	keyFile := filepath.Join(dir, "ed.key")
	_, edPub, _ := run("keygen", "--out", keyFile, "--name", "ed-1")
	edPub = strings.TrimSpace(edPub)
	// The current revision has one signature; by default two keys also
	// require two on what they build on, so going from one key to two
	// says so once.
	if code, _, stderr := run("publish", "--skip-closure-check", "--bucket", bucketURL, "--key", keyFile, "--key", "fleet-kms=fakekms://fleet", "--channel", "prod", "--store-path", sp); code != ExitRejected || !strings.Contains(stderr, "--threshold") {
		t.Fatalf("two keys over a one-key channel: %d %s", code, stderr)
	}
	if code, _, stderr := run("publish", "--skip-closure-check", "--bucket", bucketURL, "--key", keyFile, "--key", "fleet-kms=fakekms://fleet", "--threshold", "1", "--channel", "prod", "--store-path", sp); code != 0 {
		t.Fatalf("publish with two keys: %s", stderr)
	}
	if code, out, stderr := run("verify", "--bucket", bucketURL, "--channel", "prod", "--public-key", edPub, "--public-key", kmsPub, "--threshold", "2"); code != 0 {
		t.Fatalf("threshold 2: %d %s %s", code, out, stderr)
	}
	// One signature is not two.
	if code, _, stderr := run("publish", "--skip-closure-check", "--bucket", bucketURL, "--key", keyFile, "--channel", "prod", "--store-path", sp); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := run("verify", "--bucket", bucketURL, "--channel", "prod", "--public-key", edPub, "--public-key", kmsPub, "--threshold", "2"); code != ExitRejected || !strings.Contains(stderr, "threshold is 2") {
		t.Fatalf("one key for threshold 2: %d %s", code, stderr)
	}
	if _, err := manifest.ParsePublicKey(kmsPub); err != nil {
		t.Fatal(err)
	}
}
