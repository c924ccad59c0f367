package manifest

import "errors"

// Rejection reasons. Each names one acceptance rule (docs/design.md,
// Manifest rules) and is usable with errors.Is; the wrapped message says
// what exactly was wrong.
var (
	// ErrTooLarge: rule 1, the body is larger than MaxBodySize.
	ErrTooLarge = errors.New("manifest too large")
	// ErrMalformed: rule 1, not a DSSE envelope or not a v1 payload.
	ErrMalformed = errors.New("malformed manifest")
	// ErrPayloadType: rule 1, the envelope carries another payload type.
	ErrPayloadType = errors.New("unexpected payload type")
	// ErrSignature: rule 2, fewer than threshold distinct trusted keys signed.
	ErrSignature = errors.New("signature not trusted")
	// ErrWrongChannel: rule 3, signed for another channel (mix-and-match).
	ErrWrongChannel = errors.New("manifest for another channel")
	// ErrRollback: rule 4, a lower revision than one already accepted.
	ErrRollback = errors.New("revision rollback")
	// ErrEquivocation: rule 4, same revision, different signed payload.
	ErrEquivocation = errors.New("equivocation")
	// ErrExpired: rule 5, expiresAt is not in the future (freeze attack).
	ErrExpired = errors.New("manifest expired")
	// ErrInvalidStorePath: rule 6, not a valid Nix store path.
	ErrInvalidStorePath = errors.New("invalid store path")

	// ErrInvalidName: a channel, device or key name outside the allowed set.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidKey: a public or private key that cannot be used.
	ErrInvalidKey = errors.New("invalid key")
)
