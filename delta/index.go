package delta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Index is the small object that says a store path has a delta: which
// base it rebuilds from, and where the delta is. It lives beside the
// path's narinfo (IndexKey) and is as untrusted as everything in a
// bucket: a device checks NarHash and NarSize against the signed narinfo,
// BaseNarHash against its own store, and the delta against its name.
type Index struct {
	StorePath   string `json:"storePath"`
	NarHash     string `json:"narHash"` // as in the narinfo: sha256:<nixbase32>
	NarSize     uint64 `json:"narSize"`
	Base        string `json:"base"`
	BaseNarHash string `json:"baseNarHash"`
	BaseNarSize uint64 `json:"baseNarSize"`
	Delta       string `json:"delta"`     // key under cache/: delta/<nixbase32 sha256 of the object>.ndelta
	DeltaSize   int64  `json:"deltaSize"` // bytes of the delta object
	FullSize    int64  `json:"fullSize"`  // bytes of the compressed NAR it replaces
}

// MaxIndex bounds an index object read from a bucket.
const MaxIndex = 4 << 10

// MinNarSize is the smallest NAR that gets a delta: below it, the request
// for the index costs about what the delta would save. Devices ask only
// for paths at least this large.
const MinNarSize = 64 << 10

// MaxDeltaSize is the largest delta worth fetching for a NAR of narSize
// bytes: push writes one only when it is at most half the compressed NAR,
// and a compressed NAR is at most a little over the NAR. A device never
// downloads more for a delta, whatever an index claims.
func MaxDeltaSize(narSize uint64) uint64 { return narSize/2 + 4<<10 }

// MaxBaseSize is the largest base worth dumping to rebuild a NAR of
// narSize bytes: a same-name path is rarely 4 times another's size.
// Push makes no delta against a larger one, and devices refuse one.
func MaxBaseSize(narSize uint64) uint64 { return 4*narSize + 1<<20 }

// MaxCompressed is the most a NAR of narSize bytes takes compressed with
// zstd (its worst-case bound, rounded up): sizes a bucket claims or
// serves are cut to it.
func MaxCompressed(narSize uint64) int64 { return int64(narSize + narSize/128 + 64<<10) }

// ErrIndex wraps every reason an index object is refused.
var ErrIndex = errors.New("bad delta index")

// IndexKey is where the index of storePath lives, relative to cache/.
func IndexKey(storePath string) (string, error) {
	h, _, ok := splitStorePath(storePath)
	if !ok {
		return "", fmt.Errorf("%w: %q is not a store path", ErrIndex, storePath)
	}
	return h + ".delta", nil
}

// ObjectKey is where a delta with this sha256 (nixbase32) lives, relative
// to cache/: deltas are named by their content, like NARs.
func ObjectKey(sha256Base32 string) string { return "delta/" + sha256Base32 + ".ndelta" }

// ObjectHash is the nixbase32 sha256 an object key names, ok false if key
// is not an ObjectKey.
func ObjectHash(key string) (string, bool) {
	h, found := strings.CutPrefix(key, "delta/")
	h, suffixed := strings.CutSuffix(h, ".ndelta")
	if !found || !suffixed || len(h) != 52 || !isBase32(h) {
		return "", false
	}
	return h, true
}

// ParseIndex decodes an index read for storePath, refusing anything that
// is not exactly an Index for that path.
func ParseIndex(storePath string, b []byte) (*Index, error) {
	if len(b) > MaxIndex {
		return nil, fmt.Errorf("%w of %s: %d bytes, over %d", ErrIndex, storePath, len(b), MaxIndex)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ix Index
	if err := dec.Decode(&ix); err != nil {
		return nil, fmt.Errorf("%w of %s: %v", ErrIndex, storePath, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w of %s: data after the object", ErrIndex, storePath)
	}
	if err := ix.check(storePath); err != nil {
		return nil, fmt.Errorf("%w of %s: %v", ErrIndex, storePath, err)
	}
	return &ix, nil
}

func (ix *Index) check(storePath string) error {
	switch {
	case ix.StorePath != storePath:
		return fmt.Errorf("it describes %q", ix.StorePath)
	case !isStorePath(ix.Base) || ix.Base == storePath:
		return fmt.Errorf("base %q is not another store path", ix.Base)
	case !isNarHash(ix.NarHash) || !isNarHash(ix.BaseNarHash):
		return errors.New("NAR hashes must be sha256:<52 nixbase32 characters>")
	case ix.NarSize < MinNarSize || ix.BaseNarSize == 0:
		return fmt.Errorf("NAR sizes %d and %d are out of range", ix.NarSize, ix.BaseNarSize)
	case ix.DeltaSize <= 0 || ix.FullSize <= 0 || uint64(ix.DeltaSize) > MaxDeltaSize(ix.NarSize):
		return fmt.Errorf("delta size %d (full %d) is out of range", ix.DeltaSize, ix.FullSize)
	}
	if _, ok := ObjectHash(ix.Delta); !ok {
		return fmt.Errorf("delta key %q is not delta/<sha256>.ndelta", ix.Delta)
	}
	return nil
}

// splitStorePath splits /nix/store/<hash>-<name>.
func splitStorePath(p string) (hash, name string, ok bool) {
	dir, b := path.Split(p)
	if dir != "/nix/store/" || len(b) < 34 || b[32] != '-' || !isBase32(b[:32]) {
		return "", "", false
	}
	for _, c := range b[33:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+-._?=", c)) {
			return "", "", false
		}
	}
	return b[:32], b[33:], b[33] != '.'
}

func isStorePath(p string) bool { _, _, ok := splitStorePath(p); return ok }

func isNarHash(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	return ok && len(h) == 52 && isBase32(h)
}

// isBase32 reports whether s is in Nix's base32 alphabet.
func isBase32(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdfghijklmnpqrsvwxyz", c) {
			return false
		}
	}
	return s != ""
}
