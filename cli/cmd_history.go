package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type historyOptions struct {
	bucket, channel string
	limit           int
	trust           trustFlags
	json            bool
}

func historyCmd() *command {
	o := &historyOptions{}
	return &command{
		name:    "history",
		summary: "list a channel's published revisions",
		about: `Lists every revision in channels/C/, newest first, with when it was published,
what it points at and its message; the current one is marked with '*'.
With --public-key (or $NIX_OTA_PUBLIC_KEY) each entry's signature is
checked and marked (ok or the reason); without, the contents are shown as
the bucket has them, unverified.

--json prints one object on stdout: {"channel", "current" (the revision
channels/C.json holds, 0 if none), "revisions": [{"revision", "current",
"signature" ("ok", "unverified", "unreadable: …", "malformed", or the
reason it does not verify), "storePaths", "systems", "rollout",
"publishedAt", "expiresAt", "message", "publisher"}]}, newest first.`,
		examples: `  nix-ota history --bucket file:///srv/nix-ota --channel prod
  nix-ota history --channel prod --public-key "$(cat sign.pub)" --limit 5
  nix-ota history --channel prod --json | jq '.revisions[0].storePaths'`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *historyOptions) flags(fs *pflag.FlagSet) {
	addBucketFlag(fs, &o.bucket, "; needs listing (file:// or s3://)")
	fs.StringVar(&o.channel, "channel", "", "channel name (required)")
	fs.IntVar(&o.limit, "limit", 0, "show at most this many revisions (0: all)")
	o.trust = addTrustFlags(fs)
	fs.BoolVar(&o.json, "json", false, "print the revisions as one JSON object on stdout")
}

// historyResult is history --json.
type historyResult struct {
	Channel   string         `json:"channel"`
	Current   uint64         `json:"current"`
	Revisions []historyEntry `json:"revisions"`
}

// historyEntry is one revision as the bucket has it: Signature says
// whether it verified; the rest is empty when it could not be read.
type historyEntry struct {
	Revision  uint64 `json:"revision"`
	IsCurrent bool   `json:"current"`
	Signature string `json:"signature"`
	*revisionJSON
}

func (o *historyOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := checkChannel(o.channel); err != nil {
		return err
	}
	trust, s, err := openForReading(ctx, env, args, o.trust, o.bucket)
	if err != nil {
		return err
	}
	revs, err := channel.Revisions(ctx, s, o.channel)
	if err != nil {
		return err
	}
	if len(revs) == 0 {
		return channelNotFound(ctx, s, o.channel)
	}
	ptr, err := channel.ReadPointer(ctx, s, o.channel)
	if err != nil {
		return err
	}
	res := historyResult{Channel: o.channel}
	for i, shown := len(revs)-1, 0; i >= 0 && (o.limit <= 0 || shown < o.limit); i, shown = i-1, shown+1 {
		e := historyEntry{Revision: revs[i]}
		body, err := channel.ReadRevision(ctx, s, o.channel, revs[i])
		if err != nil {
			e.Signature = "unreadable: " + oneLine(err.Error(), 100)
		} else {
			e = historyOf(o.channel, revs[i], body, ptr, trust)
		}
		if e.IsCurrent {
			res.Current = e.Revision
		}
		res.Revisions = append(res.Revisions, e)
	}
	if o.json {
		return writeJSON(env.Stdout, res)
	}
	return printHistory(env.Stdout, res)
}

// historyOf reads one entry as the bucket has it, with its signature
// verdict when trust is given.
func historyOf(ch string, rev uint64, body []byte, ptr *channel.Pointer, trust *manifest.Trust) historyEntry {
	e := historyEntry{Revision: rev, IsCurrent: ptr != nil && bytes.Equal(ptr.Body, body)}
	p, _, err := manifest.DecodeUnverified(body)
	if err != nil {
		e.Signature = "malformed"
		return e
	}
	e.revisionJSON = newRevisionJSON(*p)
	e.Signature = "unverified"
	if trust != nil {
		e.Signature = "ok"
		if _, err := manifest.CheckSigned(*trust, ch, body); err != nil {
			e.Signature = firstReason(err)
		} else if p.Revision != rev {
			e.Signature = fmt.Sprintf("claims revision %d", p.Revision)
		}
	}
	return e
}

// printHistory prints the entries as a table. Bucket text passes through
// oneLine: no control character reaches the terminal.
func printHistory(w io.Writer, res historyResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REV\tPUBLISHED\tEXPIRES\tROLLOUT\tSTORE PATH\tSIGNATURE\tMESSAGE")
	for _, e := range res.Revisions {
		mark := " "
		if e.IsCurrent {
			mark = "*"
		}
		if e.revisionJSON == nil {
			fmt.Fprintf(tw, "%d%s\t-\t-\t-\t-\t%s\t\n", e.Revision, mark, oneLine(e.Signature, 120))
			continue
		}
		fmt.Fprintf(tw, "%d%s\t%s\t%s\t%d%%\t%s\t%s\t%s\n", e.Revision, mark, e.PublishedAt.Format("2006-01-02 15:04"), e.ExpiresAt.Format("2006-01-02"),
			e.Rollout, oneLine(strings.Join(e.StorePaths, " "), 400), oneLine(e.Signature, 120), oneLine(e.Message, 60))
	}
	return tw.Flush()
}
