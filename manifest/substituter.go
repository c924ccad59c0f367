package manifest

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Substituter policy. A substituter URL reaches Nix as a store URL, and Nix
// obeys store settings written into its query string: `?trusted=1` makes it
// accept closures no trusted cache key signed, `ssh://…?remote-program=`
// runs a command, `?secret-key=` or `?local-nar-cache=` name local files.
// So a signed manifest (and the device's own configuration) may name only
// plain binary caches, and only with parameters that choose where to read
// from, never what to trust or run. The publisher checks this before it
// signs and the device checks it again before Nix sees the URL.
//
// The check is deliberately stricter than URL syntax: no percent-encoding
// in the query, no duplicate parameter, values from a small character set.
// Go's and Nix's URL decoders then cannot read one string two ways.

// substituterParams lists the query parameters allowed per scheme.
var substituterParams = map[string][]string{
	"https": {"priority", "want-mass-query"},
	"http":  {"priority", "want-mass-query"},
	"file":  {"priority", "want-mass-query"},
	"s3":    {"region", "endpoint", "scheme", "profile", "priority", "want-mass-query"},
}

// MaxSubstituterLen bounds one substituter URL.
const MaxSubstituterLen = 1024

// ValidateSubstituter reports whether s is a substituter URL a manifest or a
// device configuration may name: https, http, file or s3, without userinfo
// or fragment, with only the allowed query parameters for its scheme.
func ValidateSubstituter(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: substituter %q: %s", ErrMalformed, clipForError(s), why)
	}
	if s == "" || len(s) > MaxSubstituterLen {
		return bad(fmt.Sprintf("must be 1-%d characters", MaxSubstituterLen))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == '#' {
			return bad("only printable ASCII without spaces, backslashes or fragments")
		}
	}
	scheme, rest, ok := strings.Cut(s, "://")
	allowed, known := substituterParams[scheme]
	if !ok || !known {
		return bad("scheme must be https://, http://, file:// or s3://")
	}
	authPath, query, _ := strings.Cut(rest, "?")
	host, path, _ := strings.Cut(authPath, "/")
	if strings.Contains(host, "@") {
		return bad("credentials in the URL are not allowed; give the device credentials through its configuration")
	}
	switch {
	case scheme == "file" && host != "":
		return bad("file:// takes an absolute path (file:///srv/cache), not a host")
	case scheme == "file" && path == "":
		return bad("file:// needs an absolute path")
	case scheme != "file" && host == "":
		return bad("needs a host (or a bucket name for s3://)")
	case strings.Contains(authPath, "%"):
		return bad("percent-encoding is not allowed in the host or path")
	case host != "" && !validHost(host):
		return bad("host must be a name, an IPv4 address or [IPv6], with an optional :port")
	}
	if _, err := url.Parse(s); err != nil {
		return bad("not a URL: " + err.Error())
	}
	return checkSubstituterQuery(query, allowed, bad)
}

func checkSubstituterQuery(query string, allowed []string, bad func(string) error) error {
	if query == "" {
		return nil
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(query, "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return bad(fmt.Sprintf("query parameter %q needs a value (name=value)", k))
		}
		if !slices.Contains(allowed, k) {
			return bad(fmt.Sprintf("query parameter %q is not allowed (allowed: %s)", k, strings.Join(allowed, ", ")))
		}
		if seen[k] {
			return bad(fmt.Sprintf("query parameter %q given twice", k))
		}
		seen[k] = true
		for i := 0; i < len(v); i++ {
			c := v[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':') {
				return bad(fmt.Sprintf("query parameter %q: value may hold only A-Z a-z 0-9 . - _ :", k))
			}
		}
	}
	return nil
}

// validHost accepts name[:port] and [IPv6][:port] with a numeric port.
func validHost(h string) bool {
	name, port, hasPort := h, "", false
	if rest, ok := strings.CutPrefix(h, "["); ok {
		ip, after, closed := strings.Cut(rest, "]")
		if !closed || ip == "" || strings.Trim(ip, "0123456789abcdefABCDEF:.") != "" {
			return false
		}
		name = "ipv6"
		if after != "" {
			if port, hasPort = strings.CutPrefix(after, ":"); !hasPort {
				return false
			}
		}
	} else {
		name, port, hasPort = strings.Cut(h, ":")
	}
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
		return false
	}
	return !hasPort || port != "" && len(port) <= 5 && strings.Trim(port, "0123456789") == ""
}

// clipForError keeps an attacker-sized string out of one-line errors.
func clipForError(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
