package nix

import (
	"bytes"
	"context"
	"io"
	"strings"
	"time"
)

// Invalid returns the paths that are not valid in the local store.
func (l *Local) Invalid(ctx context.Context, paths []string) (map[string]bool, error) {
	invalid := map[string]bool{}
	for len(paths) > 0 {
		batch := paths[:min(len(paths), 500)] // well below the argument limit
		paths = paths[len(batch):]
		var out bytes.Buffer
		args := append([]string{"--check-validity", "--print-invalid"}, batch...)
		if _, err := l.exec(ctx, orDefault(l.CommandTimeout, 2*time.Minute), &out, l.bin("nix-store"), args...); err != nil {
			return nil, err
		}
		for _, p := range strings.Fields(out.String()) {
			invalid[p] = true
		}
	}
	return invalid, nil
}

// NarHash is the NAR hash the local store records for a valid path
// (sha256:<nixbase32>, as in a narinfo).
func (l *Local) NarHash(ctx context.Context, storePath string) (string, error) {
	var out bytes.Buffer
	if _, err := l.exec(ctx, orDefault(l.CommandTimeout, 2*time.Minute), &out, l.bin("nix-store"), "--query", "--hash", storePath); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// Dump writes the NAR serialisation of a valid store path to w.
func (l *Local) Dump(ctx context.Context, storePath string, w io.Writer) error {
	_, err := l.exec(ctx, orDefault(l.RealiseTimeout, time.Hour), w, l.bin("nix-store"), "--dump", storePath)
	return err
}

// TrustedKeys are the binary cache keys the device's Nix trusts
// (trusted-public-keys of its configuration), which the agent's own
// trustedCacheKeys add to.
func (l *Local) TrustedKeys(ctx context.Context) ([]string, error) {
	var out bytes.Buffer
	if _, err := l.exec(ctx, orDefault(l.CommandTimeout, 2*time.Minute), &out, l.bin("nix"), "--extra-experimental-features", "nix-command", "show-config"); err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "trusted-public-keys = "); ok {
			return strings.Fields(v), nil
		}
	}
	return nil, nil
}
