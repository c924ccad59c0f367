package agent

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/status"
)

// opensslKey is what `openssl genpkey -algorithm ed25519` wrote (OpenSSL
// 3), and opensslPub the key `openssl pkey -pubout` printed for it: what
// an image builder provides must load as that key.
const (
	opensslKey = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPZ60uGIk89pOzgflUrJLU0zieejH20M3t3ALnBlWvRK\n-----END PRIVATE KEY-----\n"
	opensslPub = "eNPWGn+4F60Mcwy1MErRySBV9HHaOu8Qma+JSdEtapo="
)

func pemOf(t testing.TB, typ string, der []byte, headers map[string]string) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: der}))
}

func pkcs8(t testing.TB, key any) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseIdentityOpenSSL(t *testing.T) {
	key, err := parseIdentity([]byte(opensslKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)); got != opensslPub {
		t.Fatalf("public key %s, openssl says %s", got, opensslPub)
	}
}

// TestPKCS8MatchesX509: the agent writes its keys as the standard library
// (and openssl) does, and reads theirs.
func TestPKCS8MatchesX509(t *testing.T) {
	for range 20 {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		if !bytes.Equal(marshalPKCS8(key), pkcs8(t, key)) {
			t.Fatalf("marshalPKCS8 %x, x509 %x", marshalPKCS8(key), pkcs8(t, key))
		}
		k, err := x509.ParsePKCS8PrivateKey(marshalPKCS8(key))
		if err != nil || !key.Equal(k) {
			t.Fatalf("x509 reads back %v, %v", k, err)
		}
	}
}

// TestParseIdentityBad: every file that is not one unencrypted PKCS#8
// ed25519 key is refused, with a reason.
func TestParseIdentityBad(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	good := pemOf(t, "PRIVATE KEY", pkcs8(t, edKey), nil)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	pubDER, _ := x509.MarshalPKIXPublicKey(edKey.Public())
	x25519Key, _ := ecdh.X25519().GenerateKey(rand.Reader)
	// RFC 8410, section 10.3: an ed25519 key with attributes and its
	// public key.
	rfc8410v2, _ := base64.StdEncoding.DecodeString("MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhCoB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")
	// The algorithm with a NULL parameter, which RFC 8410 forbids.
	withParams := append([]byte{0x30, 0x30, 0x02, 0x01, 0x00, 0x30, 0x07, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x05, 0x00, 0x04, 0x22, 0x04, 0x20}, edKey.Seed()...)
	body := strings.Split(good, "\n")[1]
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", "not a PEM file"},
		{"white space", " \n\t\n", "not a PEM file"},
		{"text", "hello\n", "not a PEM file"},
		{"raw seed", string(edKey.Seed()), "not a PEM file"},
		{"text before the block", "key:\n" + good, "not a PEM file"},
		{"no END line", "-----BEGIN PRIVATE KEY-----\n" + body + "\n", "broken PEM"},
		{"bad base64 inside", "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "broken PEM"},
		{"two blocks", good + good, "exactly one PEM block"},
		{"data after the block", good + "trailing\n", "data after the PEM block"},
		{"public key", pemOf(t, "PUBLIC KEY", pubDER, nil), `PEM block "PUBLIC KEY"`},
		{"EC PRIVATE KEY type", pemOf(t, "EC PRIVATE KEY", pkcs8(t, ecKey), nil), `PEM block "EC PRIVATE KEY"`},
		{"OpenSSH key", pemOf(t, "OPENSSH PRIVATE KEY", []byte("openssh-key-v1\x00"), nil), `PEM block "OPENSSH PRIVATE KEY"`},
		{"encrypted PKCS#8", pemOf(t, "ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, nil), `PEM block "ENCRYPTED PRIVATE KEY"`},
		{"PEM headers", pemOf(t, "PRIVATE KEY", pkcs8(t, edKey), map[string]string{"Proc-Type": "4,ENCRYPTED"}), "PEM headers"},
		{"ECDSA key", pemOf(t, "PRIVATE KEY", pkcs8(t, ecKey), nil), "an ECDSA key, want an ed25519 key"},
		{"RSA key", pemOf(t, "PRIVATE KEY", pkcs8(t, rsaKey), nil), "an RSA key, want an ed25519 key"},
		{"X25519 key", pemOf(t, "PRIVATE KEY", pkcs8(t, x25519Key), nil), "an X25519 key, want an ed25519 key"},
		{"ed25519 with its public key (PKCS#8 v2)", pemOf(t, "PRIVATE KEY", rfc8410v2, nil), "an ed25519 key with extra fields or bytes"},
		{"ed25519 with parameters", pemOf(t, "PRIVATE KEY", withParams, nil), "an ed25519 key with extra fields or bytes"},
		{"not DER", pemOf(t, "PRIVATE KEY", []byte("not der at all"), nil), "not a PKCS#8 private key"},
		{"DER cut short", pemOf(t, "PRIVATE KEY", pkcs8(t, edKey)[:30], nil), "not a PKCS#8 private key"},
		{"DER with trailing bytes", pemOf(t, "PRIVATE KEY", append(pkcs8(t, edKey), 0, 0), nil), "an ed25519 key with extra fields or bytes"},
		{"too large", good + strings.Repeat(" ", maxIdentityFile), "larger than"},
		{"control type", pemOf(t, "PRIVATE\x1bKEY", pkcs8(t, edKey), nil), "want \"PRIVATE KEY\""},
	} {
		t.Run(c.name, func(t *testing.T) {
			key, err := parseIdentity([]byte(c.in))
			if err == nil || key != nil {
				t.Fatalf("accepted: %v", key)
			}
			if !strings.Contains(err.Error(), c.want) || strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Fatalf("error %q, want one line containing %q", err, c.want)
			}
		})
	}
	// The same key, written as the agent writes it: accepted.
	if key, err := parseIdentity([]byte("\n" + good + "\n")); err != nil || !key.Equal(edKey) {
		t.Fatalf("good key with white space around it: %v", err)
	}
}

// FuzzParseIdentity: no input panics; what is accepted is a working
// ed25519 key that reads back the same.
func FuzzParseIdentity(f *testing.F) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	good := pemOf(f, "PRIVATE KEY", pkcs8(f, edKey), nil)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, s := range []string{opensslKey, good, good + good, "", "-----BEGIN PRIVATE KEY-----\n", pemOf(f, "PRIVATE KEY", pkcs8(f, ecKey), nil),
		pemOf(f, "PRIVATE KEY", pkcs8(f, edKey), map[string]string{"A": "b"}), "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := parseIdentity(b)
		if err != nil {
			if key != nil {
				t.Fatal("a key with an error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		if len(key) != ed25519.PrivateKeySize {
			t.Fatalf("key of %d bytes", len(key))
		}
		msg := []byte("check-in")
		if !ed25519.Verify(key.Public().(ed25519.PublicKey), msg, ed25519.Sign(key, msg)) {
			t.Fatal("accepted key does not sign")
		}
		again, err := parseIdentity([]byte(pemOf(t, "PRIVATE KEY", pkcs8(t, key), nil)))
		if err != nil || !again.Equal(key) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func writeKeyFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestReadIdentityFile: the file itself must be a regular file that only
// its owner may read or write; each refusal is one line naming the file,
// the reason and what to do.
func TestReadIdentityFile(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	good := pemOf(t, "PRIVATE KEY", pkcs8(t, edKey), nil)
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string // "" for accepted
	}{
		{"0600", func(t *testing.T, p string) { writeKeyFile(t, p, good, 0o600) }, ""},
		{"0400", func(t *testing.T, p string) { writeKeyFile(t, p, good, 0o400) }, ""},
		{"symlink to a 0400 file", func(t *testing.T, p string) {
			writeKeyFile(t, p+".real", good, 0o400)
			os.Symlink(p+".real", p)
		}, ""},
		{"group-readable", func(t *testing.T, p string) { writeKeyFile(t, p, good, 0o640) }, "mode 0640 gives group or others access"},
		{"world-readable", func(t *testing.T, p string) { writeKeyFile(t, p, good, 0o644) }, "mode 0644"},
		{"others may write", func(t *testing.T, p string) { writeKeyFile(t, p, good, 0o602) }, "mode 0602"},
		{"directory", func(t *testing.T, p string) { os.Mkdir(p, 0o700) }, "not a regular file"},
		{"FIFO", func(t *testing.T, p string) { syscall.Mkfifo(p, 0o600) }, "not a regular file"},
		{"corrupt", func(t *testing.T, p string) { writeKeyFile(t, p, good[:40], 0o600) }, "broken PEM"},
		{"empty", func(t *testing.T, p string) { writeKeyFile(t, p, "", 0o600) }, "not a PEM file"},
		{"dangling symlink", func(t *testing.T, p string) { os.Symlink(p+".gone", p) }, "a symbolic link to a file that does not exist"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.key")
			c.setup(t, path)
			key, err := readIdentity(path, "kiosk-1")
			if c.want == "" {
				if err != nil || !key.Equal(edKey) {
					t.Fatalf("refused a good key file: %v", err)
				}
				return
			}
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if err == nil || !errors.Is(err, ErrIdentity) || !strings.Contains(msg, path+": ") || !strings.Contains(msg, c.want) ||
				!strings.Contains(msg, "delete it to generate a new one; the device must then be approved again: nix-ota device approve kiosk-1") || strings.Contains(msg, "\n") {
				t.Fatalf("got %v, want one line naming %s, %q and what to do", err, path, c.want)
			}
		})
	}
}

// TestLoadIdentityCreates: a missing key is generated, written 0600 even
// under a umask that would let everyone read it, and read back unchanged
// by every later load.
func TestLoadIdentityCreates(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	c := &Config{StateDir: filepath.Join(t.TempDir(), "state", "nested"), DeviceID: "kiosk-1"}
	c.withDefaults()
	id, err := loadIdentity(c)
	if err != nil || !id.Generated || id.Path != filepath.Join(c.StateDir, IdentityKeyFile) {
		t.Fatalf("first load: %+v, %v", id, err)
	}
	fi, err := os.Stat(id.Path)
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if di, _ := os.Stat(c.StateDir); di.Mode().Perm() != 0o700 {
		t.Fatalf("directory made for the key: mode %v, want 0700", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(c.StateDir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	b, _ := os.ReadFile(id.Path)
	if k, err := parseIdentity(b); err != nil || !k.Equal(id.Key) {
		t.Fatalf("file does not hold the key in use: %v", err)
	}
	again, err := loadIdentity(c)
	if err != nil || again.Generated || !again.Key.Equal(id.Key) {
		t.Fatalf("second load: %+v, %v", again, err)
	}
	if after, _ := os.ReadFile(id.Path); !bytes.Equal(after, b) {
		t.Fatal("a load rewrote the key file")
	}
}

// TestLoadIdentityRace: starts racing on a device without a key (the
// agent, and identity run by hand) end up with one key, made once.
func TestLoadIdentityRace(t *testing.T) {
	c := &Config{StateDir: t.TempDir(), DeviceID: "kiosk-1"}
	c.withDefaults()
	ids := make([]deviceIdentity, 8)
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = loadIdentity(c) })
	}
	wg.Wait()
	made := 0
	for i, id := range ids {
		if errs[i] != nil || !id.Key.Equal(ids[0].Key) {
			t.Fatalf("load %d: %v, key differs: %v", i, errs[i], !id.Key.Equal(ids[0].Key))
		}
		if id.Generated {
			made++
		}
	}
	if made != 1 {
		t.Fatalf("%d loads generated a key, want 1", made)
	}
}

// TestLoadIdentityUnwritable: a key that cannot be written stops the start
// as an unwritable state directory does.
func TestLoadIdentityUnwritable(t *testing.T) {
	// Nothing can be made under /proc, not even by root.
	c := &Config{StateDir: t.TempDir(), IdentityKey: "/proc/nix-ota-test/identity.key", DeviceID: "kiosk-1"}
	_, err := loadIdentity(c)
	if !errors.Is(err, ErrStateNotSaved) || !strings.Contains(err.Error(), c.IdentityKey+": cannot write a new key") {
		t.Fatalf("got %v", err)
	}
}

// TestCheckinSigned: the bucket blob is the status signed with the
// device's key, stored under the window of the time it signs.
func TestCheckinSigned(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	at := time.Date(2026, 11, 26, 9, 7, 3, 0, time.UTC)
	st := status.Status{DeviceID: "kiosk-1", Channel: "prod", State: status.UpToDate, Revision: 3, CheckedAt: at, ChangedAt: at}
	name, blob, err := checkin(st, key)
	if err != nil || name != bucket.CheckinKey("kiosk-1", at) {
		t.Fatalf("checkin: %s, %v", name, err)
	}
	s, err := status.Open("kiosk-1", blob)
	if err != nil || !status.SameKey(s.Key, key.Public().(ed25519.PublicKey)) || !s.SignedAt.Equal(at) || s.Status.Revision != 3 {
		t.Fatalf("open: %+v, %v", s, err)
	}
	if _, _, err := checkin(st, nil); err == nil {
		t.Fatal("signed without a key")
	}
}

// FuzzParsePKCS8: the DER reader under parseIdentity's PEM. What it
// accepts is exactly what it writes, and x509 reads it as the same key.
func FuzzParsePKCS8(f *testing.F) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(pkcs8(f, edKey))
	f.Add(pkcs8(f, ecKey))
	f.Add(append(pkcs8(f, edKey), 0))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		key, err := parsePKCS8(der)
		if err != nil {
			if key != nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("key %v with error %q", key, err)
			}
			return
		}
		if !bytes.Equal(marshalPKCS8(key), der) {
			t.Fatalf("accepted %x, which is not the form it writes", der)
		}
		if k, err := x509.ParsePKCS8PrivateKey(der); err != nil || !key.Equal(k) {
			t.Fatalf("x509 reads %x as %v, %v", der, k, err)
		}
	})
}
