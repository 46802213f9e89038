package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// DecodeJobSpec decodes one JSON JobSpec strictly: unknown or duplicate
// fields, keys in the wrong case, values of the wrong type, numbers out of
// range and data after the object are all refused with a *FieldError naming
// the JSON path at fault. It does not check values; call JobSpec.Validate.
func DecodeJobSpec(data []byte) (JobSpec, error) {
	var s JobSpec
	if err := decodeStrict(data, &s); err != nil {
		return JobSpec{}, err
	}
	return s, nil
}

// decodeStrict decodes data into v (a pointer) the strict way. encoding/json
// alone accepts keys in any case, keeps the last of duplicate keys and names
// only the last key of an unknown field, so a first pass walks the tokens
// against v's type and reports the full path of the first problem; the second
// pass is an ordinary Unmarshal of a document known to fit.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	t := reflect.TypeOf(v).Elem()
	if err := checkValue(dec, t, ""); err != nil {
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(data)) == 0 {
				return &FieldError{Message: "request body is empty"}
			}
			return &FieldError{Message: "invalid JSON: unexpected end of input"}
		}
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err == nil {
			return &FieldError{Message: fmt.Sprintf("unexpected data after the JSON value at byte %d: %v", dec.InputOffset(), tok)}
		}
		return &FieldError{Message: fmt.Sprintf("unexpected data after the JSON value: %v", syntaxMessage(err))}
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Field: te.Field, Message: fmt.Sprintf("must be %s, got %s", describeType(te.Type), te.Value)}
		}
		return &FieldError{Message: "invalid JSON: " + err.Error()}
	}
	return nil
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkValue reads one JSON value from dec and checks it against t. Types
// that decode themselves are skipped (their own UnmarshalJSON judges them).
func checkValue(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(path, err)
	}
	if tok == nil { // null leaves the Go value alone, like encoding/json
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) || t.Kind() == reflect.Interface {
		return skipRest(dec, tok, path)
	}
	switch tok := tok.(type) {
	case json.Delim:
		switch tok {
		case '{':
			switch t.Kind() {
			case reflect.Struct:
				return checkObject(dec, path, func(key string) (reflect.Type, error) {
					f, ok := structFields(t)[key]
					if !ok {
						return nil, &FieldError{Field: join(path, key), Message: "unknown field"}
					}
					return f, nil
				})
			case reflect.Map:
				if t.Key().Kind() != reflect.String {
					return typeErr(path, t, "an object")
				}
				return checkObject(dec, path, func(string) (reflect.Type, error) { return t.Elem(), nil })
			}
			return typeErr(path, t, "an object")
		case '[':
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return typeErr(path, t, "an array")
			}
			for i := 0; dec.More(); i++ {
				if t.Kind() == reflect.Array && i >= t.Len() {
					return &FieldError{Field: path, Message: fmt.Sprintf("must have at most %d elements", t.Len())}
				}
				if err := checkValue(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			_, err := dec.Token() // ']'
			return syntaxErr(path, err)
		}
	case string:
		if t.Kind() != reflect.String {
			return typeErr(path, t, "a string")
		}
	case bool:
		if t.Kind() != reflect.Bool {
			return typeErr(path, t, "a boolean")
		}
	case json.Number:
		return checkNumber(path, t, tok)
	}
	return nil
}

// checkObject checks the members of an object whose '{' has been read;
// fieldType returns the Go type of a key's value or the error for a key the
// type does not have.
func checkObject(dec *json.Decoder, path string, fieldType func(key string) (reflect.Type, error)) error {
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxErr(path, err)
		}
		key, _ := tok.(string) // the decoder only yields strings as keys
		if seen[key] {
			return &FieldError{Field: join(path, key), Message: "appears more than once"}
		}
		seen[key] = true
		ft, err := fieldType(key)
		if err != nil {
			return err
		}
		if err := checkValue(dec, ft, join(path, key)); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return syntaxErr(path, err)
}

func checkNumber(path string, t reflect.Type, n json.Number) error {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := n.Int64()
		if err != nil || reflect.Zero(t).OverflowInt(i) {
			return &FieldError{Field: path, Message: fmt.Sprintf("must be %s, got %s", describeType(t), n)}
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowUint(u) {
			return &FieldError{Field: path, Message: fmt.Sprintf("must be %s, got %s", describeType(t), n)}
		}
	case reflect.Float32, reflect.Float64:
		f, err := n.Float64()
		if err != nil || reflect.Zero(t).OverflowFloat(f) {
			return &FieldError{Field: path, Message: fmt.Sprintf("must be a number within range, got %s", n)}
		}
	default:
		return typeErr(path, t, "a number")
	}
	return nil
}

// skipRest consumes the rest of a value whose first token is tok.
func skipRest(dec *json.Decoder, tok json.Token, path string) error {
	d, ok := tok.(json.Delim)
	if !ok || d == '}' || d == ']' {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return syntaxErr(path, err)
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

func syntaxErr(path string, err error) error {
	if err == nil {
		return nil
	}
	if err == io.EOF {
		return err // the caller tells an empty body from a truncated one
	}
	return &FieldError{Message: "invalid JSON: " + syntaxMessage(err)}
}

func syntaxMessage(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	return err.Error()
}

func typeErr(path string, t reflect.Type, got string) error {
	return &FieldError{Field: path, Message: fmt.Sprintf("must be %s, got %s", describeType(t), strings.TrimPrefix(strings.TrimPrefix(got, "an "), "a "))}
}

// describeType names a Go type as a JSON user knows it.
func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// structFields maps the exact JSON names of t's fields to their types,
// following encoding/json's rules for tags and embedded structs.
func structFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type)
	addFields(m, t)
	fieldCache.Store(t, m)
	return m
}

func addFields(m map[string]reflect.Type, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(m, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := m[name]; !dup {
			m[name] = f.Type
		}
	}
}
