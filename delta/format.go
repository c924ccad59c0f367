// Package delta is nix-ota's binary delta between two NARs: a stream of
// ops that rebuilds a new store path's NAR (the target) from an older
// path's NAR (the base) that a device already has.
//
// A delta is never trusted. The device rebuilds the NAR, checks it against
// the NarHash of the narinfo signed by the cache key, and hands it to Nix,
// which checks signature and hash again. A bad delta therefore costs a
// download, never an install: the device falls back to the full NAR.
//
// Format (version 1): the 16-byte Magic, then one zstd frame holding ops,
// each a one-byte code and unsigned varints:
//
//	Copy n d     n bytes from the base at cursor+d (d zig-zag signed)
//	Add n d x…   n bytes from the base at cursor+d, each plus the next byte x (mod 256)
//	Literal n x… n bytes as given
//	End
//
// cursor is where the previous Copy or Add ended in the base (0 at the
// start); relative offsets keep aligned runs cheap. Add is how a shifted
// binary costs little: its bytes differ from the base only where addresses
// moved, so the x bytes are mostly zero and compress to almost nothing.
//
// Apply streams: it reads the base only at offsets, holds one zstd window
// (at most MaxWindow) and a 64 KiB buffer, and stops as soon as the output
// would exceed the size the caller expects.
package delta

import "errors"

// Magic starts every delta object.
const Magic = "nix-ota-delta-1\n"

// Op codes.
const (
	opCopy    = 'C'
	opAdd     = 'A'
	opLiteral = 'L'
	opEnd     = 'E'
)

// MaxWindow is the largest zstd window a delta may use: it bounds the
// memory Apply needs on a device.
const MaxWindow = 8 << 20

// ErrCorrupt wraps every reason a delta cannot be applied.
var ErrCorrupt = errors.New("corrupt delta")
