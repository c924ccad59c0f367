package agent

// Source checks of the package: what go vet cannot see.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/status"
)

// sources parses the package's non-test files.
func sources(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) < 5 {
		t.Fatalf("found only %d source files; run from the agent directory", len(files))
	}
	return fset, files
}

// isSave reports a call of the state file's writers, a.save() or saveState.
func isSave(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	switch f := c.Fun.(type) {
	case *ast.SelectorExpr:
		return f.Sel.Name == "save"
	case *ast.Ident:
		return f.Name == "saveState"
	}
	return false
}

func blank(exprs []ast.Expr) bool {
	for _, e := range exprs {
		if id, ok := e.(*ast.Ident); !ok || id.Name != "_" {
			return false
		}
	}
	return true
}

// uncheckedSaves lists saves whose error is dropped: a bare statement,
// an assignment to _, go or defer; and saveState called other than by save.
func uncheckedSaves(fset *token.FileSet, f *ast.File) []string {
	var bad []string
	report := func(n ast.Node, what string) { bad = append(bad, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), what)) }
	for _, decl := range f.Decls {
		fn, _ := decl.(*ast.FuncDecl)
		inSave := fn != nil && fn.Recv != nil && fn.Name.Name == "save"
		ast.Inspect(decl, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ExprStmt:
				if isSave(n.X) {
					report(n, "the error of a state save is dropped")
				}
			case *ast.GoStmt:
				if isSave(n.Call) {
					report(n, "a state save in a goroutine is not checked")
				}
			case *ast.DeferStmt:
				if isSave(n.Call) {
					report(n, "a deferred state save is not checked")
				}
			case *ast.AssignStmt:
				if len(n.Rhs) == 1 && isSave(n.Rhs[0]) && blank(n.Lhs) {
					report(n, "the error of a state save is assigned to _")
				}
			case *ast.CallExpr:
				if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "saveState" && !inSave {
					report(n, "saveState called outside Agent.save (which makes a failure stop the agent)")
				}
			}
			return true
		})
	}
	return bad
}

// TestSavesAreChecked: no save of the state file is ever ignored. A
// dropped error lets the agent act on memory the next start will not have
// (a rolled-back revision, no longer marked bad, applied again); Agent.save
// also keeps the first failure so the poll ends with ExitStateNotSaved,
// but the code after an unchecked save would still run.
func TestSavesAreChecked(t *testing.T) {
	fset, files := sources(t)
	saves := 0
	for _, f := range files {
		for _, p := range uncheckedSaves(fset, f) {
			t.Error(p)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok && isSave(e) {
				saves++
			}
			return true
		})
	}
	if saves < 10 {
		t.Fatalf("found %d saves; the check is not looking at the agent's code", saves)
	}
}

// TestSaveCheckCanFail: the check finds each way of dropping a save.
func TestSaveCheckCanFail(t *testing.T) {
	src := `package agent
func (a *Agent) f() error {
	a.save()
	_ = a.save()
	defer a.save()
	go a.save()
	saveState("", nil)
	if err := a.save(); err != nil {
		return err
	}
	return a.save()
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "bad.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[int]bool{}
	for _, b := range uncheckedSaves(fset, f) {
		var line int
		fmt.Sscanf(strings.TrimPrefix(b, "bad.go:"), "%d:", &line)
		lines[line] = true
	}
	for line := 3; line <= 11; line++ {
		if want := line <= 7; lines[line] != want {
			t.Errorf("line %d: flagged %v, want %v", line, lines[line], want)
		}
	}
}

// vocabularyLiterals lists string literals that spell a status state or a
// Result word outside the tables that define them (resultNames,
// Action.String): code compares the constants.
func vocabularyLiterals(fset *token.FileSet, f *ast.File) []string {
	words := map[string]bool{}
	for _, s := range status.States {
		words[s] = true
	}
	for _, s := range resultNames {
		words[s] = true
	}
	var bad []string
	for _, decl := range f.Decls {
		if isVocabularyTable(decl) {
			continue
		}
		ast.Inspect(decl, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && words[s] {
					bad = append(bad, fmt.Sprintf("%s: literal %s: use the constant", fset.Position(lit.Pos()), lit.Value))
				}
			}
			return true
		})
	}
	return bad
}

func isVocabularyTable(decl ast.Decl) bool {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		return d.Name.Name == "String" && d.Recv != nil
	case *ast.GenDecl:
		for _, spec := range d.Specs {
			if v, ok := spec.(*ast.ValueSpec); ok && len(v.Names) == 1 && v.Names[0].Name == "resultNames" {
				return true
			}
		}
	}
	return false
}

// TestNoVocabularyLiterals: states and results are compared as constants
// (status.UpToDate, ResultApplied), never as strings, so a renamed or
// mistyped word cannot compile into a comparison that is never true.
func TestNoVocabularyLiterals(t *testing.T) {
	fset, files := sources(t)
	for _, f := range files {
		for _, p := range vocabularyLiterals(fset, f) {
			t.Error(p)
		}
	}
	src := "package agent\nfunc f(o Outcome) bool { return o.Result.String() == \"rolled-back\" }\n"
	bf, err := parser.ParseFile(fset, "bad.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bad := vocabularyLiterals(fset, bf); len(bad) != 1 {
		t.Fatalf("the check misses a literal state: %q", bad)
	}
}
