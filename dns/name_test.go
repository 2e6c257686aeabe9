package dns

import (
	"strings"
	"testing"
)

func TestLabel(t *testing.T) {
	for in, want := range map[string]string{
		"/web-1":                       "web-1",
		"My_App.1":                     "my-app-1",
		"api":                          "api",
		"-lead-":                       "lead",
		"___":                          "",
		"":                             "",
		"héllo":                        "h-llo",
		"a b\tc":                       "a-b-c",
		strings.Repeat("x", 70):        strings.Repeat("x", 63),
		strings.Repeat("y", 62) + "_z": strings.Repeat("y", 62),
	} {
		if got := Label(in); got != want {
			t.Errorf("Label(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestZoneName(t *testing.T) {
	for in, want := range map[string]string{
		"meshnet":        "meshnet.",
		"Cluster.Local.": "cluster.local.",
		"":               "meshnet.",
		".":              "meshnet.",
		"my_zone":        "my-zone.",
	} {
		if got := zoneName(in); got != want {
			t.Errorf("zoneName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInZone(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   bool
	}{
		{"meshnet.", true},
		{"a.meshnet.", true},
		{"a.b.meshnet.", true},
		{"xmeshnet.", false},
		{"meshnet.com.", false},
		{"eshnet.", false},
		{".", false},
	} {
		if got := inZone(tc.name, "meshnet."); got != tc.in {
			t.Errorf("inZone(%q) = %v, want %v", tc.name, got, tc.in)
		}
	}
}

// TestLongNames: names that would not fit in DNS are left out, not served
// broken.
func TestLongNames(t *testing.T) {
	long := strings.Repeat("n", 60)
	zone := strings.Repeat("z", 60) + "." + strings.Repeat("y", 60) + "." + strings.Repeat("x", 60)
	tbl := NewTable(zone, []Entry{{Container: long, Services: []string{long}, Network: long, Addr: mustAddr("10.0.0.1")}})
	for name := range tbl.all.names {
		if !isName(name) {
			t.Errorf("table holds %q, which does not fit in DNS", name)
		}
	}
	if _, rcode := tbl.Lookup(long+"."+zone, 1); rcode != 0 {
		t.Errorf("%s.<zone>: rcode %d, want it served", long, rcode)
	}
}

func TestServiceName(t *testing.T) {
	for in, want := range map[string]string{
		"api":         "api",
		"web.shop":    "web.shop",
		"Web.My_Shop": "web.my-shop",
		"a..b.":       "a.b",
		"_.x":         "x",
		"":            "",
	} {
		if got := ServiceName(in); got != want {
			t.Errorf("ServiceName(%q) = %q, want %q", in, got, want)
		}
	}
}
