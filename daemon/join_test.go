package daemon

import (
	"strings"
	"testing"
)

func TestValidateJoin(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName = "h1"
	cfg.Join = []string{"198.18.0.11", "seeds.example:7946", "provider=aws tag_key=meshnet tag_value=prod", "provider=gce tag_value=meshnet"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid join list refused: %v", err)
	}
	cfg.Join = []string{"seeds.example", "provider=digitalocean tag_name=x", "host:port"}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), `unknown provider "digitalocean"`) || !strings.Contains(err.Error(), `"host:port"`) {
		t.Fatalf("Validate = %v, want errors naming the unknown provider and the bad port", err)
	}
}
