package discover

import (
	"maps"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"provider=aws tag_key=meshnet tag_value=prod", map[string]string{"provider": "aws", "tag_key": "meshnet", "tag_value": "prod"}},
		{"  provider=gce\ttag_value=x  ", map[string]string{"provider": "gce", "tag_value": "x"}},
		{`provider=gce tag_value="meshnet prod" zone_pattern="us-\"x\\"`, map[string]string{"provider": "gce", "tag_value": "meshnet prod", "zone_pattern": `us-"x\`}},
		{`provider=aws tag_value=`, map[string]string{"provider": "aws", "tag_value": ""}},
		{`provider=aws secret_access_key=a=b`, map[string]string{"provider": "aws", "secret_access_key": "a=b"}},
	} {
		got, err := ParseQuery(tc.in)
		if err != nil {
			t.Errorf("ParseQuery(%q): %v", tc.in, err)
			continue
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("ParseQuery(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"":                            "no provider",
		"tag_key=x":                   "no provider",
		"provider=aws tag_key":        "want key=value",
		"provider=aws =x":             "want key=value",
		"provider=aws provider=gce":   "given twice",
		`provider=aws tag_value="x`:   "unterminated quote",
		`provider=aws tag_value="x"y`: "after the closing quote",
		`provider=aws tag_value=x"y"`: "quote inside",
		`provider=aws tag_value="x\`:  "unterminated quote",
		`provider=aws "tag key"=x`:    "want key=value",
	} {
		_, err := ParseQuery(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseQuery(%q) = %v, want an error with %q", in, err, want)
		}
	}
}
