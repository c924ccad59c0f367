package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cascadeNix is the Nix expression of the rebuild-cascade case, run from
// the repository root as every bench program is.
const cascadeNix = "bench/deltaupdate/cascade.nix"

// pkgSpec is one package of the cascade as cascade.nix reads it from
// packages.json: its files are staged under Dir.
type pkgSpec struct {
	Name  string     `json:"name"`
	Dir   string     `json:"dir"`
	ELF   []string   `json:"elf"`   // dynamic ELF files: patchelf sets their RUNPATH
	Subst []string   `json:"subst"` // text files with @out@ and @zlib@ to fill in
	Patch *patchSpec `json:"patch,omitempty"`
}

// patchSpec is the small change of the dependency's second version: one
// byte of a file, and a line in share/doc/<name>/patches.
type patchSpec struct {
	File   string `json:"file"`
	Offset int    `json:"offset"`
	Byte   string `json:"byte"`
	Name   string `json:"name"`
}

type cascadeSpec struct {
	Dep        pkgSpec   `json:"dep"`
	Dependents []pkgSpec `json:"dependents"`
}

// cascadeCase builds the closure twice with nix-build: once with zlib as
// Debian ships it, once with zlib patched. Every dependent embeds zlib's
// store path (RUNPATH, wrappers, .pc and .la files), so all get new paths.
func cascadeCase(ctx context.Context, s *store, work string) (caseSpec, error) {
	if _, err := os.Stat(cascadeNix); err != nil {
		return caseSpec{}, fmt.Errorf("%s: %w (run from the repository root)", cascadeNix, err)
	}
	if _, err := exec.LookPath("patchelf"); err != nil {
		return caseSpec{}, fmt.Errorf("patchelf not found: the rebuild-cascade case sets RUNPATHs with it (apt-get install patchelf; make bench installs it)")
	}
	src := filepath.Join(work, "src")
	spec, err := stageCascade(src)
	if err != nil {
		return caseSpec{}, err
	}
	var closures [2][]string
	for i, patch := range []string{"", "1"} {
		closures[i], err = s.build(ctx, cascadeNix, "--arg", "src", src, "--argstr", "patch", patch)
		if err != nil {
			return caseSpec{}, fmt.Errorf("build the cascade (patch %q): %w", patch, err)
		}
	}
	var names []string
	for _, d := range spec.Dependents {
		names = append(names, d.Name)
	}
	return caseSpec{
		name: "rebuild-cascade",
		description: fmt.Sprintf("closures built with nix-build: %s (Debian's files, one byte patched in the second build) and %d programs of this machine that link it (%s): every ELF file's RUNPATH set to the dependency with patchelf, wrappers, .pc/.la/config files naming it",
			spec.Dep.Name, len(names), strings.Join(names, ", ")),
		old: closures[0],
		new: closures[1],
	}, nil
}

// stageCascade copies the packages' files from this machine into src and
// writes src/packages.json.
func stageCascade(src string) (cascadeSpec, error) {
	var spec cascadeSpec
	var err error
	if spec.Dep, err = stageZlib(src); err != nil {
		return spec, err
	}
	var missing []string
	for _, f := range []func(string) (pkgSpec, error){stageZstd, stageSqlite, stageCurl, stageGit, stagePython, stagePerl} {
		p, err := f(src)
		var ni notInstalled
		switch {
		case errors.As(err, &ni):
			missing = append(missing, string(ni))
			continue
		case err != nil:
			return spec, err
		}
		spec.Dependents = append(spec.Dependents, p)
	}
	if len(spec.Dependents) < minDependents {
		return spec, fmt.Errorf("the rebuild-cascade case needs %d dependents and found %d: apt-get install %s", minDependents, len(spec.Dependents), strings.Join(missing, " "))
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return spec, err
	}
	return spec, os.WriteFile(filepath.Join(src, "packages.json"), b, 0o644)
}

// minDependents is how many programs the cascade must rebuild: a program
// whose Debian package is not installed is left out, down to this many.
const minDependents = 4

// notInstalled names a Debian package the case would copy files from.
type notInstalled string

func (n notInstalled) Error() string {
	return fmt.Sprintf("Debian package %s is not installed: the rebuild-cascade case copies its files (apt-get install %s)", string(n), string(n))
}

// debVersion is the upstream version of an installed Debian package.
func debVersion(pkg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil || len(out) == 0 {
		return "", notInstalled(pkg)
	}
	return upstreamVersion(string(out)), nil
}

// upstreamVersion strips a Debian version's epoch, revision and repack
// suffixes: 1:1.2.13.dfsg-1 is 1.2.13.
func upstreamVersion(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.IndexAny(v, "-+~"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSuffix(v, ".dfsg")
}

// stager collects one package's files under src/dir.
type stager struct {
	root string
	spec pkgSpec
	err  error
}

func newStager(src, dir, debPkg, pname string) (*stager, error) {
	v, err := debVersion(debPkg)
	if err != nil {
		return nil, err
	}
	return &stager{root: filepath.Join(src, dir), spec: pkgSpec{Name: pname + "-" + v, Dir: dir}}, nil
}

// file copies one host file (symlinks resolved) to rel.
func (st *stager) file(host, rel string) {
	if st.err != nil {
		return
	}
	fi, err := os.Stat(host)
	if err != nil {
		st.err = fmt.Errorf("%s: %w (the rebuild-cascade case copies it from this Debian machine)", host, err)
		return
	}
	dst := filepath.Join(st.root, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		st.err = err
		return
	}
	mode := os.FileMode(0o644)
	if fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	if st.err = copyFile(host, dst, mode); st.err == nil && isDynamicELF(dst) {
		st.spec.ELF = append(st.spec.ELF, rel)
	}
}

// tree copies a host directory to rel; keep filters by path relative to
// it, symlinks stay symlinks.
func (st *stager) tree(host, rel string, keep func(rel string, d fs.DirEntry) bool) {
	if st.err != nil {
		return
	}
	st.err = filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(host, p)
		if r != "." && !keep(r, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(rel, r)
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(st.root, dst), 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			return st.link(p, dst)
		}
		st.file(p, dst)
		return st.err
	})
}

func (st *stager) link(host, rel string) error {
	target, err := os.Readlink(host)
	if err != nil {
		return err
	}
	return st.symlink(target, rel)
}

func (st *stager) symlink(target, rel string) error {
	dst := filepath.Join(st.root, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.Symlink(target, dst)
}

// text writes a file in which the build fills in @out@ and @zlib@.
func (st *stager) text(rel, content string, mode os.FileMode) {
	if st.err != nil {
		return
	}
	dst := filepath.Join(st.root, rel)
	if st.err = os.MkdirAll(filepath.Dir(dst), 0o755); st.err == nil {
		st.err = os.WriteFile(dst, []byte(content), mode)
	}
	st.spec.Subst = append(st.spec.Subst, rel)
}

// wrap moves bin/prog aside and writes the wrapper makeWrapper would.
func (st *stager) wrap(prog string) {
	if st.err != nil {
		return
	}
	bin := filepath.Join(st.root, "bin")
	if st.err = os.Rename(filepath.Join(bin, prog), filepath.Join(bin, "."+prog+"-wrapped")); st.err != nil {
		return
	}
	for i, e := range st.spec.ELF {
		if e == "bin/"+prog {
			st.spec.ELF[i] = "bin/." + prog + "-wrapped"
		}
	}
	st.text("bin/"+prog, "#! /bin/bash -e\nexport LD_LIBRARY_PATH='@zlib@/lib'${LD_LIBRARY_PATH:+':'}$LD_LIBRARY_PATH\nexec -a \"$0\" \"@out@/bin/."+prog+"-wrapped\"  \"$@\"\n", 0o755)
}

func (st *stager) done() (pkgSpec, error) { return st.spec, st.err }

// isDynamicELF reports whether patchelf can set the file's RUNPATH.
func isDynamicELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Section(".dynamic") != nil
}

// pcFile is a pkg-config file as Nix builds write them.
func pcFile(name, desc, version, libs, private string) string {
	return "prefix=@out@\nexec_prefix=${prefix}\nlibdir=${prefix}/lib\nincludedir=${prefix}/include\n\nName: " + name +
		"\nDescription: " + desc + "\nVersion: " + version + "\nLibs: -L${libdir} " + libs + "\nLibs.private: " + private + "\nCflags: -I${includedir}\n"
}

// laFile is a libtool archive file naming zlib among its dependencies.
func laFile(lib, soname, real string) string {
	return "# " + lib + ".la - a libtool library file\n# Generated by libtool (GNU libtool) 2.4.7\n\ndlname='" + soname + "'\nlibrary_names='" + real + " " + soname + " " + lib + ".so'\nold_library=''\ninherited_linker_flags=''\ndependency_libs=' -L@zlib@/lib -lz -lm'\nweak_library_names=''\ncurrent=0\nage=0\nrevision=0\ninstalled=yes\nshouldnotlink=no\ndlopen=''\ndlpreopen=''\nlibdir='@out@/lib'\n"
}

// patchAt returns the patch that changes one byte of the copyright line
// in file: a change as small as a one-line fix, at a place that exists in
// every build of the library.
func patchAt(root, file string) (*patchSpec, error) {
	b, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return nil, err
	}
	mark := []byte(" Copyright 1995-20")
	i := bytes.LastIndex(b, mark)
	if i < 0 {
		return nil, fmt.Errorf("%s has no %q to patch: the rebuild-cascade case needs a zlib that carries its copyright line", file, mark)
	}
	off := i + len(mark) + 1 // the year's last digit
	return &patchSpec{File: file, Offset: off, Byte: string(rune('0' + (b[off]-'0'+1)%10)), Name: "copyright-year.patch"}, nil
}
