package main

import (
	"io/fs"
	"path/filepath"
	"strings"
)

// The packages of the rebuild-cascade case, staged from this Debian
// machine's files the way their Nix packages lay them out.

const multiarch = "/usr/lib/x86_64-linux-gnu"

// libFile finds one of a library's files, e.g. libz.so.1.2.13.
func libFile(pattern string) string {
	m, _ := filepath.Glob(filepath.Join(multiarch, pattern))
	if len(m) == 0 {
		return filepath.Join(multiarch, pattern) // st.file names it in its error
	}
	return m[len(m)-1]
}

// sharedLib copies a shared library to lib/ with its soname links.
func (st *stager) sharedLib(pattern, soname, dev string) {
	host := libFile(pattern)
	real := filepath.Base(host)
	st.file(host, "lib/"+real)
	if st.err == nil && soname != real {
		st.err = st.symlink(real, "lib/"+soname)
	}
	if st.err == nil && dev != "" {
		st.err = st.symlink(real, "lib/"+dev)
	}
}

func stageZlib(src string) (pkgSpec, error) {
	st, err := newStager(src, "zlib", "zlib1g", "zlib")
	if err != nil {
		return pkgSpec{}, err
	}
	st.sharedLib("libz.so.1.*", "libz.so.1", "libz.so")
	for _, h := range []string{"zlib.h", "zconf.h"} {
		if fileExists("/usr/include/" + h) { // zlib1g-dev
			st.file("/usr/include/"+h, "include/"+h)
		}
	}
	v := strings.TrimPrefix(st.spec.Name, "zlib-")
	st.text("lib/pkgconfig/zlib.pc", pcFile("zlib", "zlib compression library", v, "-lz", ""), 0o644)
	st.text("share/doc/zlib/patches", "", 0o644)
	if st.err == nil {
		st.spec.Patch, st.err = patchAt(st.root, "lib/"+filepath.Base(libFile("libz.so.1.*")))
	}
	return st.done()
}

func stageZstd(src string) (pkgSpec, error) {
	st, err := newStager(src, "zstd", "zstd", "zstd")
	if err != nil {
		return pkgSpec{}, err
	}
	for _, b := range []string{"zstd", "zstdgrep", "zstdless"} {
		st.file("/usr/bin/"+b, "bin/"+b)
	}
	for _, l := range []string{"zstdcat", "zstdmt", "unzstd"} {
		if st.err == nil {
			st.err = st.symlink("zstd", "bin/"+l)
		}
	}
	st.sharedLib("libzstd.so.1.*", "libzstd.so.1", "libzstd.so")
	v := strings.TrimPrefix(st.spec.Name, "zstd-")
	st.text("lib/pkgconfig/libzstd.pc", pcFile("zstd", "fast lossless compression algorithm library", v, "-lzstd", "-L@zlib@/lib -lz -pthread"), 0o644)
	st.text("nix-support/propagated-build-inputs", "@zlib@\n", 0o644)
	return st.done()
}

func stageSqlite(src string) (pkgSpec, error) {
	st, err := newStager(src, "sqlite", "sqlite3", "sqlite")
	if err != nil {
		return pkgSpec{}, err
	}
	st.file("/usr/bin/sqlite3", "bin/sqlite3")
	st.sharedLib("libsqlite3.so.0.*", "libsqlite3.so.0", "libsqlite3.so")
	v := strings.TrimPrefix(st.spec.Name, "sqlite-")
	st.text("lib/pkgconfig/sqlite3.pc", pcFile("SQLite", "SQL database engine", v, "-lsqlite3", "-lm -L@zlib@/lib -lz"), 0o644)
	st.text("lib/libsqlite3.la", laFile("libsqlite3", "libsqlite3.so.0", filepath.Base(libFile("libsqlite3.so.0.*"))), 0o644)
	return st.done()
}

func stageCurl(src string) (pkgSpec, error) {
	st, err := newStager(src, "curl", "curl", "curl")
	if err != nil {
		return pkgSpec{}, err
	}
	st.file("/usr/bin/curl", "bin/curl")
	st.sharedLib("libcurl.so.4.*", "libcurl.so.4", "libcurl.so")
	v := strings.TrimPrefix(st.spec.Name, "curl-")
	st.text("lib/pkgconfig/libcurl.pc", pcFile("libcurl", "Library to transfer files with ftp, http, etc.", v, "-lcurl", "-L@zlib@/lib -lz -lssl -lcrypto"), 0o644)
	st.text("lib/libcurl.la", laFile("libcurl", "libcurl.so.4", filepath.Base(libFile("libcurl.so.4.*"))), 0o644)
	st.text("bin/curl-config", "#! /bin/sh\nprefix=\"@out@\"\nexec_prefix=${prefix}\nincludedir=${prefix}/include\ncase \"$1\" in\n--libs) echo \"-L${exec_prefix}/lib -lcurl -L@zlib@/lib -lz\";;\n--cflags) echo \"-I${includedir}\";;\n--version) echo \"libcurl "+v+"\";;\n--prefix) echo \"$prefix\";;\n*) echo \"usage: curl-config [--libs|--cflags|--version|--prefix]\"; exit 1;;\nesac\n", 0o755)
	st.wrap("curl")
	return st.done()
}

func stageGit(src string) (pkgSpec, error) {
	st, err := newStager(src, "git", "git", "git")
	if err != nil {
		return pkgSpec{}, err
	}
	st.file("/usr/bin/git", "bin/git")
	// libexec/git-core: the git commands that are programs of their own; the
	// many hard links to git itself are left out.
	st.tree("/usr/lib/git-core", "libexec/git-core", func(rel string, d fs.DirEntry) bool {
		if d.IsDir() || d.Type()&fs.ModeSymlink != 0 {
			return false
		}
		fi, err := d.Info()
		return err == nil && nlink(fi) == 1
	})
	st.file("/usr/share/perl5/Git.pm", "share/perl5/Git.pm")
	st.wrap("git")
	return st.done()
}

func stagePython(src string) (pkgSpec, error) {
	st, err := newStager(src, "python", "python3.11", "python3")
	if err != nil {
		return pkgSpec{}, err
	}
	st.file("/usr/bin/python3.11", "bin/python3.11")
	if st.err == nil {
		st.err = st.symlink("python3.11", "bin/python3")
	}
	keep := map[string]bool{"lib-dynload": true, "encodings": true, "json": true, "email": true, "collections": true,
		"importlib": true, "http": true, "urllib": true, "logging": true, "re": true}
	st.tree("/usr/lib/python3.11", "lib/python3.11", func(rel string, d fs.DirEntry) bool {
		top, _, nested := strings.Cut(rel, string(filepath.Separator))
		if d.Name() == "__pycache__" {
			return false
		}
		return keep[top] || (!nested && !d.IsDir() && strings.HasSuffix(rel, ".py"))
	})
	st.text("lib/pkgconfig/python-3.11.pc", pcFile("Python", "Build a C extension for Python", "3.11", "", "-ldl -L@zlib@/lib -lz"), 0o644)
	return st.done()
}

func stagePerl(src string) (pkgSpec, error) {
	st, err := newStager(src, "perl", "perl", "perl")
	if err != nil {
		return pkgSpec{}, err
	}
	v := strings.TrimPrefix(st.spec.Name, "perl-")
	st.file("/usr/bin/perl", "bin/perl")
	arch := filepath.Join("/usr/lib/x86_64-linux-gnu/perl", v)
	st.tree(arch, "lib/perl5/"+v+"/x86_64-linux-thread-multi", func(string, fs.DirEntry) bool { return true })
	st.text("lib/perl5/"+v+"/x86_64-linux-thread-multi/Config_nix.pl", "# where this perl was built\n$Config::Config{installprefix} = '@out@';\n$Config::Config{libpth} = '@zlib@/lib';\n1;\n", 0o644)
	return st.done()
}
