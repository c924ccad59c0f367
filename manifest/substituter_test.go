package manifest

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// substituterCases are URLs a manifest or device configuration might
// carry, and whether the policy accepts them.
var substituterCases = []struct {
	url string
	ok  bool
}{
	{"ssh://localhost?remote-program=/tmp/x", false},
	{"https://c?trusted=1", false},
	{"https://c?trusted%3D1", false},
	{"https://c?tru%73ted=1", false},
	{"s3://b?region=x&trusted=1", false},
	{"https://user:pw@c", false},
	{"https://c#x", false},
	{"file://host/x", false},
	{"https://c?Trusted=1", false},
	{"https://c?priority=1&priority=2", false},
	{"https://c?priority=1%26trusted%3D1", false},
	{"https://c?priority=1;trusted=1", false},
	{"https://c?&trusted=1", false},
	{"https://c?trusted", false},
	{"https://c?secret-key=/etc/nix/key", false},
	{"s3://b?remote-store=x", false},
	{"file:///srv/cache?local-nar-cache=/x", false},
	{"ssh-ng://c", false},
	{"HTTPS://c", false},
	{" https://c", false},
	{"https://c\n", false},
	{"https://c/\u202e", false},
	{"https://c%40evil", false},
	{"https:/c", false},
	// Hosts net/url cannot parse (and Nix cannot open), found while
	// writing FuzzValidateSubstituter.
	{"https://[", false},
	{"https://[::1", false},
	{"https://c:x", false},
	{"s3://b:9000x?region=x", false},
	{"", false},
	{"http://c?priority=40", true},
	{"s3://b?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1", true},
	{"https://cache.example.org", true},
	{"https://cache.example.org/fleet?want-mass-query=true&priority=30", true},
	{"https://[::1]:8080/cache", true},
	{"file:///srv/cache", true},
	// A word like "trusted" as a value is data, not a setting: Nix reads
	// store settings from parameter names only.
	{"s3://b?profile=trusted", true},
}

func TestSubstituterPolicy(t *testing.T) {
	for _, c := range substituterCases {
		err := ValidateSubstituter(c.url)
		if (err == nil) != c.ok {
			t.Errorf("ValidateSubstituter(%q) = %v, want ok=%v", c.url, err, c.ok)
			continue
		}
		if err != nil && (!errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "\n")) {
			t.Errorf("ValidateSubstituter(%q): %v, want a one-line ErrMalformed", c.url, err)
		}
		if err == nil {
			if why := substituterBreaksPolicy(c.url); why != "" {
				t.Errorf("%q: %s", c.url, why)
			}
		}
	}
}

// allowedParams is the policy written out independently of substituter.go.
var allowedParams = map[string][]string{
	"https": {"priority", "want-mass-query"},
	"http":  {"priority", "want-mass-query"},
	"file":  {"priority", "want-mass-query"},
	"s3":    {"region", "endpoint", "scheme", "profile", "priority", "want-mass-query"},
}

// forbiddenWords are store settings that change what Nix trusts or runs.
var forbiddenWords = []string{"trusted", "remote-program", "remote-store", "secret-key"}

// substituterBreaksPolicy says how an accepted URL breaks the policy, or
// "" when it keeps it, reading the URL both as Go's net/url does and as
// Nix does.
func substituterBreaksPolicy(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("net/url cannot parse it: %v", err)
	}
	allowed, ok := allowedParams[u.Scheme]
	switch {
	case !ok:
		return "scheme " + strconv.Quote(u.Scheme)
	case u.User != nil:
		return "userinfo"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "fragment"
	case (u.Scheme == "file") != (u.Host == ""):
		return "host " + strconv.Quote(u.Host) + " for " + u.Scheme
	}
	_, nixQuery, _ := strings.Cut(s, "?")
	if nixQuery != u.RawQuery {
		return fmt.Sprintf("Go reads the query %q, Nix %q", u.RawQuery, nixQuery)
	}
	params, err := nixDecodeQuery(nixQuery)
	if err != nil {
		return err.Error()
	}
	goParams, err := url.ParseQuery(u.RawQuery)
	if err != nil || len(goParams) != len(params) {
		return fmt.Sprintf("Go reads the parameters %v (%v), Nix %v", goParams, err, params)
	}
	for _, kv := range params {
		if !slices.Contains(allowed, kv[0]) {
			return "parameter " + strconv.Quote(kv[0]) + " is not allowed for " + u.Scheme
		}
		for _, w := range forbiddenWords {
			if strings.Contains(strings.ToLower(kv[0]), w) {
				return "parameter " + strconv.Quote(kv[0])
			}
		}
		// A value must stay a value even if something decoded it again.
		if strings.ContainsAny(kv[1], "&=%?#+; \t\r\n") {
			return "value " + strconv.Quote(kv[1]) + " could become a parameter"
		}
	}
	return ""
}

// nixDecodeQuery decodes a store URL query the way Nix's decodeQuery does:
// split on '&' (empty pieces skipped), a piece without '=' is ignored, split
// each at its first '=', percent-decode both sides. It returns the pairs in
// order (Nix keeps the first of duplicate names). Where Nix would throw
// (a '%' without two hex digits), it returns an error.
func nixDecodeQuery(q string) ([][2]string, error) {
	var out [][2]string
	for _, piece := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(piece, "=")
		if piece == "" || !ok {
			continue
		}
		dk, err := nixPercentDecode(k)
		if err != nil {
			return nil, err
		}
		dv, err := nixPercentDecode(v)
		if err != nil {
			return nil, err
		}
		out = append(out, [2]string{dk, dv})
	}
	return out, nil
}

func nixPercentDecode(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("Nix refuses the query parameter %q", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("Nix refuses the query parameter %q", s)
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
