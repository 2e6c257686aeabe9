package discover

import (
	"errors"
	"fmt"
	"strings"
)

// ParseQuery parses a discovery query in go-discover's syntax: key=value
// pairs separated by spaces; a value holding spaces is written in double
// quotes, with \" and \\ inside. The provider key is required.
//
//	provider=aws region=eu-west-1 tag_key=meshnet tag_value=prod
//	provider=gce project_name=my-project tag_value="meshnet prod"
func ParseQuery(s string) (map[string]string, error) {
	args := map[string]string{}
	rest := strings.TrimSpace(s)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("want key=value, got %q", firstField(rest))
		}
		key := rest[:eq]
		if strings.ContainsAny(key, " \t\"") {
			return nil, fmt.Errorf("want key=value, got %q", firstField(rest))
		}
		rest = rest[eq+1:]
		var val string
		var err error
		if strings.HasPrefix(rest, `"`) {
			val, rest, err = unquote(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
				return nil, fmt.Errorf("value of %s: text after the closing quote", key)
			}
		} else {
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
			if strings.Contains(val, `"`) {
				return nil, fmt.Errorf("value of %s: a quote inside an unquoted value", key)
			}
		}
		if _, dup := args[key]; dup {
			return nil, fmt.Errorf("key %s given twice", key)
		}
		args[key] = val
		rest = strings.TrimLeft(rest, " \t")
	}
	if args["provider"] == "" {
		return nil, errors.New("no provider= in the discovery query")
	}
	return args, nil
}

// unquote reads a double-quoted string at the start of s and returns its
// value and what follows the closing quote.
func unquote(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return "", "", errors.New("unterminated quote")
			}
			i++
			b.WriteByte(s[i])
		case '"':
			return b.String(), s[i+1:], nil
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated quote")
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}
