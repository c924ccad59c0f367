package signing

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/nix-ota/nix-ota/manifest"
)

var (
	testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	spA     = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
)

func payload(rev uint64) *manifest.Payload {
	return &manifest.Payload{
		Schema: manifest.Schema, Channel: "prod", Revision: rev, StorePath: spA,
		Substituters: []string{"https://cache.example.org"},
		PublishedAt:  testNow.Add(-time.Hour), ExpiresAt: testNow.Add(720 * time.Hour),
		Rollout: manifest.Rollout{Percent: 100, Salt: "s"}, Switch: manifest.SwitchNow, Message: "test",
	}
}

func newKey(t testing.TB, name string) (Key, manifest.PublicKey) {
	t.Helper()
	pemBytes, pub, err := Generate(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Load(pemBytes, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

// newECDSAKey is a P-256 key through sigstore's signer, the kind a KMS
// key gives the CLI.
func newECDSAKey(t testing.TB, name string) (Key, manifest.PublicKey) {
	t.Helper()
	sv, _, err := signature.NewDefaultECDSASignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	k := Key{Name: name, Signer: sv}
	pub, err := k.Public()
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

func mustSign(t testing.TB, p *manifest.Payload, keys ...Key) []byte {
	t.Helper()
	b, err := Sign(context.Background(), p, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sigstoreAccepts checks an envelope's signatures with sigstore's own
// verifiers: the reference the device-side verifier must agree with.
func sigstoreAccepts(t testing.TB, trust manifest.Trust, body []byte) bool {
	t.Helper()
	var env ssldsse.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return false
	}
	var vs []ssldsse.Verifier
	for _, k := range trust.Keys {
		v, err := signature.LoadVerifier(k.Key, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, &sigdsse.VerifierAdapter{SignatureVerifier: v, Pub: k.Key, PubKeyID: k.Name})
	}
	th := trust.Threshold
	if th == 0 {
		th = 1
	}
	ev, err := ssldsse.NewMultiEnvelopeVerifier(th, vs...)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ev.VerifyAndDecode(context.Background(), &env)
	return err == nil
}

func TestSignedHereVerifiesOnDevices(t *testing.T) {
	ed, edPub := newKey(t, "fleet-1")
	ec, ecPub := newECDSAKey(t, "kms-1")
	for name, c := range map[string]struct {
		keys  []Key
		trust manifest.Trust
	}{
		"ed25519 key file":     {[]Key{ed}, manifest.Trust{Keys: []manifest.PublicKey{edPub}}},
		"ECDSA P-256 (KMS)":    {[]Key{ec}, manifest.Trust{Keys: []manifest.PublicKey{ecPub}}},
		"both, threshold 2":    {[]Key{ed, ec}, manifest.Trust{Keys: []manifest.PublicKey{edPub, ecPub}, Threshold: 2}},
		"ECDSA key, text form": {[]Key{ec}, manifest.Trust{Keys: []manifest.PublicKey{reparse(t, ecPub)}}},
	} {
		t.Run(name, func(t *testing.T) {
			body := mustSign(t, payload(3), c.keys...)
			v, err := manifest.Verify(c.trust, "prod", manifest.State{Revision: 2}, body, testNow)
			if err != nil {
				t.Fatalf("device rejects a manifest signed here: %v", err)
			}
			if len(v.KeyIDs) != len(c.keys) {
				t.Fatalf("counted keys %v", v.KeyIDs)
			}
			if !sigstoreAccepts(t, c.trust, body) {
				t.Fatal("sigstore's verifier rejects it")
			}
		})
	}
}

func reparse(t testing.TB, k manifest.PublicKey) manifest.PublicKey {
	t.Helper()
	p, err := manifest.ParsePublicKey(k.String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerifiersAgree: on envelopes altered the ways an attacker or a bad
// mirror would, the device's verifier and sigstore's give the same answer.
func TestVerifiersAgree(t *testing.T) {
	ed, edPub := newKey(t, "fleet-1")
	ec, ecPub := newECDSAKey(t, "kms-1")
	trust := manifest.Trust{Keys: []manifest.PublicKey{edPub, ecPub}}
	for _, k := range []Key{ed, ec} {
		good := mustSign(t, payload(3), k)
		for name, body := range mutations(good) {
			_, err := manifest.CheckSigned(trust, "prod", body)
			device := err == nil
			if err != nil && !errors.Is(err, manifest.ErrSignature) && !errors.Is(err, manifest.ErrMalformed) && !errors.Is(err, manifest.ErrPayloadType) {
				t.Fatalf("%s/%s: unexpected rejection %v", k.Name, name, err)
			}
			if ref := sigstoreAccepts(t, trust, body); ref != device {
				t.Errorf("%s/%s: device accepts=%v, sigstore accepts=%v (%v)", k.Name, name, device, ref, err)
			}
			if name != "unchanged" && device {
				t.Errorf("%s/%s: accepted an altered envelope", k.Name, name)
			}
		}
	}
}

// mutations returns the envelope unchanged and altered in its signature,
// key id and payload.
func mutations(good []byte) map[string][]byte {
	var env ssldsse.Envelope
	_ = json.Unmarshal(good, &env)
	out := map[string][]byte{"unchanged": good}
	edit := func(name string, f func(e *ssldsse.Envelope)) {
		e := env
		e.Signatures = append([]ssldsse.Signature(nil), env.Signatures...)
		f(&e)
		b, _ := json.Marshal(e)
		out[name] = b
	}
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	flip := func(i int) []byte { s := bytes.Clone(sig); s[i%len(s)] ^= 1; return s }
	edit("first sig byte flipped", func(e *ssldsse.Envelope) { e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(flip(0)) })
	edit("last sig byte flipped", func(e *ssldsse.Envelope) { e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(flip(len(sig) - 1)) })
	edit("sig truncated", func(e *ssldsse.Envelope) { e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(sig[:len(sig)-1]) })
	edit("sig empty", func(e *ssldsse.Envelope) { e.Signatures[0].Sig = "" })
	edit("keyid swapped", func(e *ssldsse.Envelope) {
		if e.Signatures[0].KeyID == "fleet-1" {
			e.Signatures[0].KeyID = "kms-1"
		} else {
			e.Signatures[0].KeyID = "fleet-1"
		}
	})
	edit("payload changed", func(e *ssldsse.Envelope) {
		p, _ := base64.StdEncoding.DecodeString(e.Payload)
		e.Payload = base64.StdEncoding.EncodeToString(bytes.Replace(p, []byte(`"revision":3`), []byte(`"revision":4`), 1))
	})
	edit("payload type changed in PAE only", func(e *ssldsse.Envelope) { e.PayloadType = manifest.PayloadType + " " })
	return out
}

// FuzzVerifiersAgree: whatever the device's verifier accepts, sigstore's
// accepts too, and whatever sigstore accepts that the device refuses is a
// difference documented in agree_test.go.
func FuzzVerifiersAgree(f *testing.F) {
	ed, edPub := newKey(f, "fleet-1")
	ec, ecPub := newECDSAKey(f, "kms-1")
	trust := manifest.Trust{Keys: []manifest.PublicKey{edPub, ecPub}}
	for _, k := range []Key{ed, ec} {
		for _, b := range mutations(mustSign(f, payload(3), k)) {
			f.Add(b)
		}
	}
	for _, c := range differenceCases(f, ed, edPub, ec, ecPub) {
		f.Add(c.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := manifest.CheckSigned(trust, "prod", body)
		ref := sigstoreAccepts(t, trust, body)
		switch {
		case err == nil && !ref:
			t.Fatalf("device accepts what sigstore rejects")
		case err != nil && ref && documentedDifference(trust, body) == "":
			t.Fatalf("device refuses what sigstore accepts, and no documented difference explains it: %v", err)
		}
	})
}

func TestEncryptedKey(t *testing.T) {
	pemBytes, pub, err := Generate("enc", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsEncrypted(pemBytes) {
		t.Fatal("key not marked encrypted")
	}
	if _, err := Load(pemBytes, "", nil); !errors.Is(err, manifest.ErrInvalidKey) {
		t.Fatalf("no password: got %v", err)
	}
	if _, err := Load(pemBytes, "", []byte("wrong")); !errors.Is(err, manifest.ErrInvalidKey) {
		t.Fatalf("wrong password: got %v", err)
	}
	k, err := Load(pemBytes, "", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	body := mustSign(t, payload(1), k)
	if _, err := manifest.Verify(manifest.Trust{Keys: []manifest.PublicKey{pub}}, "prod", manifest.State{}, body, testNow); err != nil {
		t.Fatal(err)
	}
}

func TestLoadBad(t *testing.T) {
	pemBytes, _, err := Generate("k", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		pem  []byte
		name string
	}{
		"not PEM":         {[]byte("hello"), ""},
		"empty":           {nil, ""},
		"bad name":        {pemBytes, "a b"},
		"garbage in PEM":  {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "k"},
		"no name in file": {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), ""},
	} {
		if _, err := Load(c.pem, c.name, nil); !errors.Is(err, manifest.ErrInvalidKey) {
			t.Errorf("%s: %v, want ErrInvalidKey", name, err)
		}
	}
}

func TestSignRefusesInvalidPayload(t *testing.T) {
	k, _ := newKey(t, "k")
	for name, mut := range map[string]func(*manifest.Payload){
		"bad channel":      func(p *manifest.Payload) { p.Channel = "../etc" },
		"store path /tmp":  func(p *manifest.Payload) { p.StorePath = "/tmp/x" },
		"store path below": func(p *manifest.Payload) { p.StorePath = spA + "/bin" },
		"no path":          func(p *manifest.Payload) { p.StorePath = "" },
		"rollout 101":      func(p *manifest.Payload) { p.Rollout.Percent = 101 },
		"switch test":      func(p *manifest.Payload) { p.Switch = "test" },
		"revision 0":       func(p *manifest.Payload) { p.Revision = 0 },
		"expires before":   func(p *manifest.Payload) { p.ExpiresAt = p.PublishedAt },
		"substituter opt":  func(p *manifest.Payload) { p.Substituters = []string{"--option"} },
		"substituter ftp":  func(p *manifest.Payload) { p.Substituters = []string{"ftp://x"} },
		"bad class":        func(p *manifest.Payload) { p.Systems = manifest.Systems{"a b": spA} },
	} {
		p := payload(1)
		mut(p)
		if _, err := Sign(context.Background(), p, k); err == nil {
			t.Errorf("%s: signed an invalid payload", name)
		}
	}
	if _, err := Sign(context.Background(), payload(1)); err == nil {
		t.Error("signed with no key")
	}
	if _, err := Sign(context.Background(), payload(1), Key{Name: "a b", Signer: k.Signer}); !errors.Is(err, manifest.ErrInvalidName) {
		t.Errorf("bad key name: %v", err)
	}
}
