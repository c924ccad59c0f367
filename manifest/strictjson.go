package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Strict JSON. Go's encoding/json keeps the last of two duplicate keys and
// matches struct fields case-insensitively (with Unicode folding: "ſchema"
// and "Schema" both fill Schema). Another reader of the same signed bytes
// (jq, a Python audit script, a later version of this code) could then see
// a different manifest than the device did. Before any struct decode,
// checkStrict walks the tokens once and refuses a duplicate key at any
// level and any key in a struct-shaped object that is not exactly one of
// the struct's JSON names.

// maxJSONDepth bounds nesting; real manifests nest three levels deep.
const maxJSONDepth = 8

// shape is what checkStrict expects of a JSON value: an object whose keys
// are exactly fields' names (fields != nil), an object whose keys are data,
// like a map (isMap), with elem the shape of its values or array elements.
// A nil *shape is a scalar (or a type with its own decoder, like time).
type shape struct {
	fields map[string]*shape
	isMap  bool
	elem   *shape
}

var (
	payloadShape  = shapeOf(reflect.TypeFor[Payload]())
	envelopeShape = shapeOf(reflect.TypeFor[ssldsse.Envelope]())
)

// shapeOf derives a shape from a Go type's JSON encoding.
func shapeOf(t reflect.Type) *shape {
	if t == reflect.TypeFor[time.Time]() || t.Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return shapeOf(t.Elem())
	case reflect.Map:
		return &shape{isMap: true, elem: shapeOf(t.Elem())}
	case reflect.Slice, reflect.Array:
		if s := shapeOf(t.Elem()); s != nil {
			return &shape{elem: s}
		}
		return nil
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			s.fields[name] = shapeOf(f.Type)
		}
		return s
	}
	return nil
}

// errStrict marks a document refused by checkStrict.
var errStrict = errors.New("not strict JSON")

// checkStrict refuses b unless it is exactly one JSON value of shape s with
// no duplicate keys, no case-variant field names and at most maxJSONDepth
// levels, followed by nothing but white space.
func checkStrict(b []byte, s *shape) error {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", errStrict)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := strictValue(dec, s, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the document", errStrict)
	}
	return nil
}

func strictValue(dec *json.Decoder, s *shape, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", errStrict, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxJSONDepth {
		return fmt.Errorf("%w: nested deeper than %d levels", errStrict, maxJSONDepth)
	}
	var elem *shape
	if s != nil {
		elem = s.elem
	}
	if d == '[' {
		for dec.More() {
			if err := strictValue(dec, elem, depth+1); err != nil {
				return err
			}
		}
		return closing(dec)
	}
	return strictObject(dec, s, depth)
}

func strictObject(dec *json.Decoder, s *shape, depth int) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", errStrict, err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: object key %v is not a string", errStrict, tok)
		}
		if seen[key] {
			return fmt.Errorf("%w: key %q appears twice", errStrict, clipForError(key))
		}
		seen[key] = true
		child, err := s.child(key)
		if err != nil {
			return err
		}
		if err := strictValue(dec, child, depth+1); err != nil {
			return err
		}
	}
	return closing(dec)
}

// closing reads the ']' or '}' that ends an array or object.
func closing(dec *json.Decoder) error {
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", errStrict, err)
	}
	return nil
}

// child is the shape of the value under key, or an error for a key a
// struct does not have exactly.
func (s *shape) child(key string) (*shape, error) {
	if s == nil || s.fields == nil {
		if s != nil && s.isMap {
			return s.elem, nil
		}
		return nil, nil // not an object in the schema: the struct decode refuses it
	}
	if c, ok := s.fields[key]; ok {
		return c, nil
	}
	for name := range s.fields {
		if strings.EqualFold(name, key) {
			return nil, fmt.Errorf("%w: key %q differs from %q only in case", errStrict, clipForError(key), name)
		}
	}
	return nil, fmt.Errorf("%w: unknown key %q", errStrict, clipForError(key))
}
