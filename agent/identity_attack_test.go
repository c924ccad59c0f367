package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestAttackIdentityForeignOwner: a key file that is 0600 but owned by
// another (unprivileged) user, who knows (or chose) the key, must not be
// the root agent's identity.
func TestAttackIdentityForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to chown (make test runs as root)")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o1777) // e.g. identityKey pointed into a shared directory
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	path := filepath.Join(dir, "identity.key")
	writeKeyFile(t, path, pemOf(t, "PRIVATE KEY", pkcs8(t, edKey), nil), 0o600)
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	key, err := readIdentity(path, "kiosk-1")
	if err == nil && key.Equal(edKey) {
		t.Errorf("a key file owned by uid 65534 (who can read it) was accepted as the device's identity")
	}
}
