package manifest

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Edwards25519 arithmetic with math/big, written from RFC 8032 §5.1 so the
// blocklist in keys.go is checked against the curve, not against itself:
// -x² + y² = 1 + d·x²·y² over GF(p), p = 2^255-19, d = -121665/121666.
var (
	edP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	edD = func() *big.Int {
		d := new(big.Int).ModInverse(big.NewInt(121666), edP)
		d.Mul(d, big.NewInt(-121665))
		return d.Mod(d, edP)
	}()
)

type edPoint struct{ x, y *big.Int }

func (a edPoint) key() string { return a.x.String() + "," + a.y.String() }

func edMod(v *big.Int) *big.Int { return v.Mod(v, edP) }

func edDiv(a, b *big.Int) *big.Int {
	return edMod(new(big.Int).Mul(a, new(big.Int).ModInverse(b, edP)))
}

// edDecode decodes an encoding the way Go's crypto/ed25519 does (y is
// reduced mod p, a sign bit on x = 0 is ignored); ok is false off the curve.
func edDecode(enc [32]byte) (edPoint, bool) {
	sign := enc[31] >> 7
	enc[31] &= 0x7f
	le := make([]byte, 32)
	for i := range enc {
		le[31-i] = enc[i]
	}
	y := edMod(new(big.Int).SetBytes(le))
	y2 := edMod(new(big.Int).Mul(y, y))
	u := edMod(new(big.Int).Sub(y2, big.NewInt(1)))
	v := edMod(new(big.Int).Add(new(big.Int).Mul(edD, y2), big.NewInt(1)))
	x := new(big.Int).ModSqrt(edDiv(u, v), edP)
	if x == nil {
		return edPoint{}, false
	}
	if x.Sign() != 0 && uint8(x.Bit(0)) != sign {
		x.Sub(edP, x)
	}
	return edPoint{x, y}, true
}

func edEncode(a edPoint) [32]byte {
	var enc [32]byte
	be := a.y.FillBytes(make([]byte, 32))
	for i := range enc {
		enc[i] = be[31-i]
	}
	enc[31] |= byte(a.x.Bit(0)) << 7
	return enc
}

func edAdd(a, b edPoint) edPoint {
	xx := new(big.Int).Mul(a.x, b.x)
	yy := new(big.Int).Mul(a.y, b.y)
	t := edMod(new(big.Int).Mul(edD, new(big.Int).Mul(xx, yy)))
	xn := new(big.Int).Add(new(big.Int).Mul(a.x, b.y), new(big.Int).Mul(a.y, b.x))
	x := edDiv(edMod(xn), edMod(new(big.Int).Add(big.NewInt(1), t)))
	y := edDiv(edMod(new(big.Int).Add(yy, xx)), edMod(new(big.Int).Sub(big.NewInt(1), t)))
	return edPoint{x, y}
}

func edIsIdentity(a edPoint) bool { return a.x.Sign() == 0 && a.y.Cmp(big.NewInt(1)) == 0 }

func edTimes8(a edPoint) edPoint {
	for range 3 {
		a = edAdd(a, a)
	}
	return a
}

// smallOrderEncodings is every encoding the blocklist covers: each listed
// y with both values of the sign bit.
func smallOrderEncodings() [][32]byte {
	var out [][32]byte
	for _, y := range smallOrderY {
		for _, sign := range []byte{0, 0x80} {
			e := y
			e[31] |= sign
			out = append(out, e)
		}
	}
	return out
}

// TestSmallOrderBlocklist: every blocked encoding decodes to a point P with
// [8]P = identity; together they are the 8 points of the torsion subgroup
// (all of them: the subgroup has exactly 8); every other spelling of those
// points (y+p < 2^255) is blocked too; a real key is not.
func TestSmallOrderBlocklist(t *testing.T) {
	points := map[string]edPoint{}
	for _, enc := range smallOrderEncodings() {
		a, ok := edDecode(enc)
		if !ok {
			t.Fatalf("%x: not on the curve", enc)
		}
		if !edIsIdentity(edTimes8(a)) {
			t.Fatalf("%x: [8]P is not the identity; not a small-order point", enc)
		}
		points[a.key()] = a
	}
	if len(points) != 8 {
		t.Fatalf("the blocklist covers %d distinct points, the torsion subgroup has 8", len(points))
	}
	limit := new(big.Int).Lsh(big.NewInt(1), 255)
	for _, a := range points {
		alt := edPoint{a.x, new(big.Int).Add(a.y, edP)}
		if alt.y.Cmp(limit) >= 0 {
			continue
		}
		enc := edEncode(alt)
		enc[31] &= 0x7f
		if weakEd25519(enc[:]) == "" {
			t.Errorf("non-canonical spelling %x of a small-order point is not blocked", enc)
		}
	}
	// Control: the base point is on the curve and not of small order, and
	// it, like every generated key, passes.
	base := [32]byte{0x58}
	for i := 1; i < 32; i++ {
		base[i] = 0x66
	}
	if b, ok := edDecode(base); !ok || edIsIdentity(edTimes8(b)) || weakEd25519(base[:]) != "" {
		t.Fatalf("base point: on curve %v, refused %q", ok, weakEd25519(base[:]))
	}
	for range 200 {
		pk, _, _ := ed25519.GenerateKey(nil)
		if why := weakEd25519(pk); why != "" {
			t.Fatalf("generated key %x refused: %s", pk, why)
		}
	}
}

// forgeSmallOrder makes an envelope over a valid payload that "verifies"
// under a small-order key without any private key: S = 0 and R one of the
// 8 torsion points, trying messages until R = -[k]A, which for a point of
// order n happens for about one message in n.
func forgeSmallOrder(t *testing.T, pub PublicKey) []byte {
	t.Helper()
	var candidates [][32]byte
	for _, enc := range smallOrderEncodings() {
		if p, _ := edDecode(enc); edEncode(p) == enc {
			candidates = append(candidates, enc) // canonical only: Verify compares R's bytes
		}
	}
	v := keyVerifier{pub}
	for i := range 400 {
		p := payload(3)
		p.Message = fmt.Sprintf("forged %d", i)
		raw := mustJSON(p)
		for _, r := range candidates {
			sig := append(r[:], make([]byte, 32)...)
			if v.Verify(context.Background(), pae(PayloadType, raw), sig) == nil {
				return envelopeOf(raw, rawSig{pub.Name, sig})
			}
		}
	}
	t.Fatalf("no forgery found for %s", pub)
	return nil
}

type rawSig struct {
	keyID string
	sig   []byte
}

// envelopeOf builds an envelope from given signature bytes.
func envelopeOf(raw []byte, sigs ...rawSig) []byte {
	type sig struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	}
	env := struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []sig  `json:"signatures"`
	}{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(raw)}
	for _, s := range sigs {
		env.Signatures = append(env.Signatures, sig{s.keyID, base64.StdEncoding.EncodeToString(s.sig)})
	}
	return mustJSON(env)
}

// TestSmallOrderKeyForgery: with a small-order key trusted, an envelope
// nobody signed passes the signature check the device ran before keys were
// screened (newKeyVerifier took any 32 bytes and CheckSigned went straight
// to the DSSE verifier below). Now the key is refused when parsed, when the
// trust is checked, and by Verify and CheckSigned.
func TestSmallOrderKeyForgery(t *testing.T) {
	for _, enc := range smallOrderEncodings() {
		pub := PublicKey{Name: "weak", Key: ed25519.PublicKey(enc[:])}
		t.Run(fmt.Sprintf("%x", enc[:4])+fmt.Sprintf("..%x", enc[31]), func(t *testing.T) {
			body := forgeSmallOrder(t, pub)
			env, _, err := decodeEnvelope(body)
			if err != nil {
				t.Fatal(err)
			}
			old, err := ssldsse.NewMultiEnvelopeVerifier(1, keyVerifier{pub})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := old.VerifyAndDecode(context.Background(), env); err != nil {
				t.Fatalf("the forgery does not pass the unscreened check, so this test would prove nothing: %v", err)
			}
			trust := Trust{Keys: []PublicKey{pub}}
			if _, err := Verify(trust, "prod", State{}, body, testNow); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("Verify: %v, want ErrInvalidKey", err)
			}
			if _, err := CheckSigned(trust, "prod", body); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("CheckSigned: %v, want ErrInvalidKey", err)
			}
			_, err = ParsePublicKey(pub.String())
			if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), `"weak"`) || !strings.Contains(err.Error(), "small-order") {
				t.Fatalf("ParsePublicKey(%s): %v", pub, err)
			}
		})
	}
}

// TestTrustSameKeyTwice: one key trusted under two names would let one
// signature, listed once under each name, meet threshold 2.
func TestTrustSameKeyTwice(t *testing.T) {
	s, pubA := newKey(t, "a")
	pubB := PublicKey{Name: "b", Key: pubA.Key}
	raw := mustJSON(payload(3))
	sig := s.sign(t, pae(PayloadType, raw))
	body := envelopeOf(raw, rawSig{"a", sig}, rawSig{"b", sig})

	// What the device ran without the check: threshold 2 met by one signature.
	env, _, err := decodeEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := ssldsse.NewMultiEnvelopeVerifier(2, keyVerifier{pubA}, keyVerifier{pubB})
	if _, _, err := old.VerifyAndDecode(context.Background(), env); err != nil {
		t.Fatalf("the unchecked verifier refuses, so this test would prove nothing: %v", err)
	}

	_, ecA := newECDSAKey(t, "kms-a")
	ecB, err := ParsePublicKey(strings.Replace(ecA.String(), "kms-a:", "kms-b:", 1)) // same point, new pointer
	if err != nil {
		t.Fatal(err)
	}
	_, other := newKey(t, "c")
	for name, trust := range map[string]Trust{
		"ed25519 under two names":     {Keys: []PublicKey{pubA, pubB}, Threshold: 2},
		"ed25519, threshold 1":        {Keys: []PublicKey{pubA, other, pubB}},
		"ECDSA parsed twice":          {Keys: []PublicKey{ecA, ecB}, Threshold: 2},
		"ECDSA among distinct keys":   {Keys: []PublicKey{other, ecA, pubA, ecB}, Threshold: 3},
		"small-order key among good":  {Keys: []PublicKey{pubA, {Name: "id", Key: ed25519.PublicKey(append([]byte{1}, make([]byte, 31)...))}}},
		"invalid name":                {Keys: []PublicKey{{Name: "a b", Key: pubA.Key}}},
		"non-canonical ed25519 point": {Keys: []PublicKey{{Name: "nc", Key: ed25519.PublicKey(nonCanonical(2))}}},
	} {
		t.Run(name, func(t *testing.T) {
			err := trust.Check()
			if !errors.Is(err, ErrInvalidKey) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Check: %v, want one-line ErrInvalidKey", err)
			}
			if _, err := CheckSigned(trust, "prod", body); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("CheckSigned: %v, want ErrInvalidKey", err)
			}
		})
	}
	if err := (Trust{Keys: []PublicKey{pubA, other, ecA}, Threshold: 3}).Check(); err != nil {
		t.Fatalf("three distinct keys: %v", err)
	}
}

// nonCanonical is the encoding of y = p + i (i < 19), which Go's decoder
// reads as y = i.
func nonCanonical(i byte) []byte {
	b := make([]byte, 32)
	for j := range b {
		b[j] = 0xff
	}
	b[0], b[31] = 0xed+i, 0x7f
	return b
}

func TestParsePublicKeyRefusesWeakKeys(t *testing.T) {
	cases := map[string][]byte{"all zero": make([]byte, 32), "identity": append([]byte{1}, make([]byte, 31)...)}
	for i := byte(0); i < 19; i++ {
		cases[fmt.Sprintf("y = p+%d", i)] = nonCanonical(i)
	}
	for i, enc := range smallOrderEncodings() {
		cases[fmt.Sprintf("blocklist %d", i)] = enc[:]
	}
	for name, raw := range cases {
		for _, form := range []string{"fleet:", "fleet:ed25519:"} {
			in := form + base64.StdEncoding.EncodeToString(raw)
			_, err := ParsePublicKey(in)
			if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), `"fleet"`) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: ParsePublicKey(%q) = %v, want a one-line ErrInvalidKey naming the key", name, in, err)
			}
		}
	}
}
