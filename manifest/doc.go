// Package manifest is the signed pointer a device follows: the v1 payload,
// its DSSE envelope, signing, and the acceptance rules (docs/design.md,
// Manifest rules).
//
// Threat model. The bucket and every mirror or CDN in front of it are
// untrusted transport: they may serve any bytes, old bytes, or nothing. A
// device must still never (a) install a system that a threshold of its
// trusted keys did not sign for its channel, (b) go back to a lower revision
// than one it already accepted, (c) keep following a manifest past its
// expiry (freeze attack), or (d) accept two different payloads under one
// revision (equivocation). Everything that enforces this lives in Verify,
// which is a pure function of (trust, state, bytes, now): no I/O, no clock,
// no globals, so every rule is table-tested and fuzzed.
//
// Signatures cover DSSE's pre-authentication encoding of the payload type
// and the exact payload bytes; the payload is never re-encoded before it is
// checked.
package manifest
