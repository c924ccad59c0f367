package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
)

// requireChannel refuses a channel the bucket does not have, naming the
// ones it has: a typo in --channel must not read as an empty fleet or as
// a manifest a device would reject. It is a usage error (exit 2).
func requireChannel(ctx context.Context, s bucket.Store, name string) error {
	_, err := s.Stat(ctx, bucket.ChannelKey(name))
	if errors.Is(err, bucket.ErrNotFound) {
		return channelNotFound(ctx, s, name)
	}
	return err
}

// channelNotFound is the error for a channel with no channels/NAME.json:
// channel "prood" not found; channels in this bucket: prod, staging (did
// you mean prod?).
func channelNotFound(ctx context.Context, s bucket.Store, name string) error {
	names, _, err := channel.List(ctx, s)
	var more string
	switch {
	case errors.Is(err, bucket.ErrUnsupported):
		more = fmt.Sprintf(" (no %s at %s; this URL cannot list the channels it has)", bucket.ChannelKey(name), s)
	case err != nil:
		more = fmt.Sprintf(" (no %s; listing the channels failed: %s)", bucket.ChannelKey(name), oneLine(err.Error(), 200))
	case len(names) == 0:
		more = fmt.Sprintf("; %s has no channels yet (nix-ota publish creates one)", s)
	default:
		more = "; channels in this bucket: " + strings.Join(first(names, 20), ", ") + didYouMean(name, names, " (", ")")
	}
	return usageError{fmt.Errorf("channel %q %w%s", name, bucket.ErrNotFound, more)}
}

// warnNewChannel is publish's note when it starts a channel whose name is
// close to one the bucket has: a typo there makes a new channel no device
// follows, so it is said, though it is not refused.
func warnNewChannel(ctx context.Context, env *Env, s bucket.Store, name string) {
	names, _, err := channel.List(ctx, s)
	if err != nil {
		return
	}
	if hint := didYouMean(name, names, "", ""); hint != "" {
		fmt.Fprintf(env.Stderr, "note: channel %q is new; channels in this bucket: %s (%s)\n", name, strings.Join(first(names, 20), ", "), hint)
	}
}
