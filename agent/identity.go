package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/status"
)

// IdentityKeyFile is the identity key's name in the state directory, where
// it lives unless identityKey says otherwise.
const IdentityKeyFile = "identity.key"

// maxIdentityFile bounds what is read of a key file: an ed25519 key in
// PKCS#8 PEM is 119 bytes.
const maxIdentityFile = 4 << 10

// ErrIdentity marks an identity key file the agent will not use.
var ErrIdentity = errors.New("identity key")

// errNoIdentity: the key file does not exist (yet).
var errNoIdentity = errors.New("no identity key")

// deviceIdentity is the device's check-in signing key as loaded at start.
type deviceIdentity struct {
	Path      string
	Key       ed25519.PrivateKey
	Generated bool // made by this start: the file did not exist
}

// Public is the identity's public key as statuses and the device
// registry write it ("ed25519:BASE64").
func (id deviceIdentity) Public() string {
	return status.EncodeKey(id.Key.Public().(ed25519.PublicKey))
}

// Fingerprint names the key for people to compare (status.Fingerprint).
func (id deviceIdentity) Fingerprint() string {
	return status.Fingerprint(id.Key.Public().(ed25519.PublicKey))
}

// generatedLine is the one line logged when a start made the key.
func (id deviceIdentity) generatedLine(deviceID string) string {
	return fmt.Sprintf("identity: generated the device key %s in %s; publishers see this device as pending until they approve it: nix-ota device approve %s", id.Fingerprint(), id.Path, deviceID)
}

// identityPath is the configured key file, or the state directory's.
func (c *Config) identityPath() string {
	if c.IdentityKey != "" {
		return c.IdentityKey
	}
	return filepath.Join(c.StateDir, IdentityKeyFile)
}

// loadIdentity reads the device's identity key, generating and writing
// one when the file does not exist. Start, identity and check-config
// --online all come here, so the key they report is the key that signs.
// A file that exists but cannot be used is an error, never replaced: the
// publisher approved that key, and a new one needs a new approval.
func loadIdentity(c *Config) (deviceIdentity, error) {
	path := c.identityPath()
	key, err := readIdentity(path, c.DeviceID)
	if err == nil {
		return deviceIdentity{Path: path, Key: key}, nil
	}
	if !errors.Is(err, errNoIdentity) {
		return deviceIdentity{}, err
	}
	key, err = createIdentity(path)
	if errors.Is(err, fs.ErrExist) {
		// Another process (identity, check-config --online) made it
		// first: that one is the device's key.
		if key, err = readIdentity(path, c.DeviceID); errors.Is(err, errNoIdentity) {
			err = fmt.Errorf("%w %s: removed while it was being made; start again", ErrIdentity, path)
		}
		return deviceIdentity{Path: path, Key: key}, err
	}
	if err != nil {
		return deviceIdentity{}, fmt.Errorf("%w: %w %s: cannot write a new key: %v; make its directory writable (or set identityKey to a writable path)", ErrStateNotSaved, ErrIdentity, path, err)
	}
	return deviceIdentity{Path: path, Key: key, Generated: true}, nil
}

// readIdentity opens the key file and checks it: a regular file, readable
// by its owner only, holding one ed25519 key in PKCS#8 PEM. Every error
// but a missing file names the file and what to do (deviceID for the
// approve command).
func readIdentity(path, deviceID string) (ed25519.PrivateKey, error) {
	replace := fmt.Sprintf("delete it to generate a new one; the device must then be approved again: nix-ota device approve %s", deviceID)
	// Non-blocking: a FIFO put there must not hang the start.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		fi, lerr := os.Lstat(path)
		switch {
		case lerr == nil && fi.Mode()&fs.ModeSymlink != 0:
			// A link to a secret that is not there: generating a key
			// behind it would hide that.
			return nil, fmt.Errorf("%w %s: a symbolic link to a file that does not exist; provide that file (is the secret deployed?) or %s", ErrIdentity, path, replace)
		case lerr == nil:
			// Another start made it between the open and now: read that.
			f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		default:
			return nil, errNoIdentity
		}
	}
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("%w %s: %v; run nix-ota-agent as root, as its service does", ErrIdentity, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: cannot open it: %v; fix its path or mount, or %s", ErrIdentity, path, err, replace)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v; %s", ErrIdentity, path, err, replace)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file (%s); %s", ErrIdentity, path, fi.Mode().Type(), replace)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%w %s: owned by uid %d, who can read it or chose it; %s (or chown it to root if nobody else can have read it)", ErrIdentity, path, st.Uid, replace)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: mode %04o gives group or others access, so it may have leaked; %s (or chmod 600 it if nobody else can have read it)", ErrIdentity, path, perm, replace)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	defer clear(b)
	if err != nil {
		return nil, fmt.Errorf("%w %s: cannot read it: %v; %s", ErrIdentity, path, err, replace)
	}
	key, err := parseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v; %s", ErrIdentity, path, err, replace)
	}
	return key, nil
}

// parseIdentity reads an identity key file's content: exactly one PEM
// "PRIVATE KEY" block (PKCS#8, as openssl genpkey -algorithm ed25519
// writes) holding an ed25519 key, with nothing but white space around it.
func parseIdentity(b []byte) (ed25519.PrivateKey, error) {
	if len(b) > maxIdentityFile {
		return nil, fmt.Errorf("larger than %d bytes, not an ed25519 key", maxIdentityFile)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("-----BEGIN ")) {
		return nil, errors.New("not a PEM file (want -----BEGIN PRIVATE KEY-----, as openssl genpkey -algorithm ed25519 writes)")
	}
	if bytes.Count(b, []byte("-----BEGIN")) != 1 {
		return nil, errors.New("want exactly one PEM block")
	}
	block, rest := pem.Decode(b)
	switch {
	case block == nil:
		return nil, errors.New("broken PEM (no complete -----BEGIN/-----END block)")
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, errors.New("data after the PEM block")
	case block.Type != "PRIVATE KEY":
		return nil, fmt.Errorf("PEM block %q, want \"PRIVATE KEY\" (unencrypted PKCS#8 ed25519)", status.Clean(block.Type, 40))
	case len(block.Headers) > 0:
		return nil, errors.New("PEM headers (an encrypted key?); want an unencrypted PKCS#8 ed25519 key")
	}
	defer clear(block.Bytes)
	return parsePKCS8(block.Bytes)
}

// pkcs8Ed25519 is the DER of a PKCS#8 ed25519 private key (RFC 8410) up
// to its 32-byte seed: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
// OCTET STRING { OCTET STRING (32 bytes) } }. It is the one form read and
// written here: what openssl genpkey and x509.MarshalPKCS8PrivateKey
// write. (x509's own PKCS#8 code would link RSA and ECDSA private keys
// into the agent, about 200 KB.)
var pkcs8Ed25519 = []byte{0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}

// keyAlgorithms names the PKCS#8 key types someone might put there.
var keyAlgorithms = map[string]string{
	"1.2.840.113549.1.1.1": "an RSA key", "1.2.840.10045.2.1": "an ECDSA key",
	"1.3.101.110": "an X25519 key", "1.3.101.113": "an Ed448 key",
}

// parsePKCS8 reads a PKCS#8 ed25519 private key, and says what other
// PKCS#8 keys are.
func parsePKCS8(der []byte) (ed25519.PrivateKey, error) {
	var k struct {
		Version int
		Algo    struct {
			Algorithm asn1.ObjectIdentifier
			Params    asn1.RawValue `asn1:"optional"`
		}
		Key []byte
	}
	if _, err := asn1.Unmarshal(der, &k); err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %v", err)
	}
	if oid := k.Algo.Algorithm.String(); oid != "1.3.101.112" {
		name := keyAlgorithms[oid]
		if name == "" {
			name = "a key of algorithm " + oid
		}
		return nil, fmt.Errorf("%s, want an ed25519 key", name)
	}
	if len(der) != len(pkcs8Ed25519)+ed25519.SeedSize || !bytes.HasPrefix(der, pkcs8Ed25519) {
		return nil, errors.New("an ed25519 key with extra fields or bytes; want the plain PKCS#8 form openssl genpkey -algorithm ed25519 writes")
	}
	return ed25519.NewKeyFromSeed(der[len(pkcs8Ed25519):]), nil
}

// marshalPKCS8 writes key in the form parsePKCS8 reads.
func marshalPKCS8(key ed25519.PrivateKey) []byte {
	return append(slices.Clip(pkcs8Ed25519), key.Seed()...)
}

// createIdentity generates a key and writes it to path, which must not
// exist (fs.ErrExist if it does by then). The file is born 0600
// (atomicfile writes a private temporary file and links it into place),
// so the key is never readable by others, not even briefly.
func createIdentity(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der := marshalPKCS8(key)
	defer clear(der)
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer clear(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateFile(path, b, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}
