package cache

import (
	"strings"
	"testing"
)

const sp = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"

const good = `StorePath: /nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a
URL: nar/1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l1m8v1fvjz0w4mkrq3p5k.nar.zst
Compression: zstd
FileHash: sha256:1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l1m8v1fvjz0w4mkrq3p5k
FileSize: 100
NarHash: sha256:1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l1m8v1fvjz0w4mkrq3p5k
NarSize: 920
References: 1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l-lib
`

func TestParseNarinfo(t *testing.T) {
	ni, err := ParseNarinfo(sp, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if ni.NarSize != 920 || len(ni.References) != 1 {
		t.Fatalf("%+v", ni)
	}
	for name, body := range map[string]string{
		"empty":        "",
		"other path":   strings.Replace(good, "nixos-system-a", "nixos-system-b", 1),
		"url escapes":  strings.Replace(good, "URL: nar/", "URL: ../../", 1),
		"absolute url": strings.Replace(good, "URL: nar/", "URL: /etc/", 1),
		"remote url":   strings.Replace(good, "URL: nar/", "URL: https://evil.example/", 1),
		"garbage line": good + "not a key value line\n",
		"bad size":     strings.Replace(good, "NarSize: 920", "NarSize: -1", 1),
		"bad hash":     strings.Replace(good, "NarHash: sha256:", "NarHash: md7:", 1),
	} {
		if _, err := ParseNarinfo(sp, []byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParseNarinfo: narinfos come from the bucket; GC walks them.
func FuzzParseNarinfo(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("StorePath: " + sp + "\nURL: x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ni, err := ParseNarinfo(sp, b)
		if err != nil {
			return
		}
		if ni.StorePath != sp || strings.Contains(ni.URL, "..") || strings.HasPrefix(ni.URL, "/") {
			t.Fatalf("accepted %+v", ni)
		}
	})
}
