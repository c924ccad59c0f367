package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

func publisherName() string {
	u := "unknown"
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

func firstReason(err error) string {
	for _, r := range []error{manifest.ErrSignature, manifest.ErrMalformed, manifest.ErrWrongChannel, manifest.ErrInvalidStorePath, manifest.ErrPayloadType, manifest.ErrTooLarge} {
		if errors.Is(err, r) {
			return "BAD: " + r.Error()
		}
	}
	return "BAD"
}

// oneLine is status.Clean, the one sanitiser for text from a bucket or a
// device: one line, no control or invisible format characters (no terminal
// escapes, no bidi tricks), at most max bytes.
func oneLine(s string, max int) string { return status.Clean(s, max) }

// humanDuration renders a duration the way an operator reads it: 29d 23h,
// 5h 3m, 42s.
func humanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 24*time.Hour:
		s = fmt.Sprintf("%dd %dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		s = fmt.Sprintf("%dm %ds", d/time.Minute, (d%time.Minute)/time.Second)
	default:
		s = fmt.Sprintf("%ds", d/time.Second)
	}
	if neg {
		return "-" + s
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

func first(xs []string, n int) []string {
	if len(xs) > n {
		return append(xs[:n:n], fmt.Sprintf("… %d more", len(xs)-n))
	}
	return xs
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func signerNames(ss []signing.Key) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, "+")
}

// writeJSON prints v as one indented JSON document: what --json prints.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func keyNames(keys []signing.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	return out
}

// revisionJSON is one signed revision as the --json outputs show it.
type revisionJSON struct {
	Channel     string           `json:"channel"`
	Revision    uint64           `json:"revision"`
	StorePaths  []string         `json:"storePaths"`
	Systems     manifest.Systems `json:"systems,omitempty"`
	Rollout     int              `json:"rollout"`
	PublishedAt time.Time        `json:"publishedAt"`
	ExpiresAt   time.Time        `json:"expiresAt"`
	Message     string           `json:"message,omitempty"`
	Publisher   string           `json:"publisher,omitempty"`
}

func newRevisionJSON(p manifest.Payload) *revisionJSON {
	return &revisionJSON{Channel: p.Channel, Revision: p.Revision, StorePaths: p.StorePaths(), Systems: p.Systems, Rollout: p.Rollout.Percent,
		PublishedAt: p.PublishedAt, ExpiresAt: p.ExpiresAt, Message: p.Message, Publisher: p.Publisher}
}

// rejectionReason is the rule a rejected manifest broke ("manifest
// expired", "signature not trusted", …), for --json.
func rejectionReason(err error) string {
	for _, r := range rejections {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return ""
}

// humanOut is where a command prints what people read: stdout, or stderr
// when stdout carries --json.
func humanOut(env *Env, asJSON bool) io.Writer {
	if asJSON {
		return env.Stderr
	}
	return env.Stdout
}
