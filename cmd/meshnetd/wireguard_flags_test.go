package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestWireGuardKeepaliveFlag(t *testing.T) {
	cfg, err := parseFlags(nil, envMap(map[string]string{"MESHNET_WIREGUARD_KEEPALIVE": "25s"}), io.Discard)
	if err != nil || cfg.WireGuardKeepalive != 25*time.Second {
		t.Fatalf("MESHNET_WIREGUARD_KEEPALIVE=25s: %v %v", cfg.WireGuardKeepalive, err)
	}
	cfg, err = parseFlags([]string{"--wireguard-keepalive", "0"}, envMap(nil), io.Discard)
	if err != nil || cfg.WireGuardKeepalive != 0 || cfg.Validate() != nil {
		t.Fatalf("--wireguard-keepalive 0: %v %v %v", cfg.WireGuardKeepalive, err, cfg.Validate())
	}
	cfg, err = parseFlags([]string{"--wireguard-keepalive", "-5s"}, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--wireguard-keepalive") {
		t.Errorf("a negative keepalive: %v", err)
	}
}

func TestWireGuardModeFlag(t *testing.T) {
	cfg, err := parseFlags(nil, envMap(nil), io.Discard)
	if err != nil || cfg.WireGuardMode != "auto" || cfg.Validate() != nil {
		t.Fatalf("default: %q %v %v", cfg.WireGuardMode, err, cfg.Validate())
	}
	cfg, err = parseFlags(nil, envMap(map[string]string{"MESHNET_WIREGUARD_MODE": "userspace"}), io.Discard)
	if err != nil || cfg.WireGuardMode != "userspace" || cfg.Validate() != nil {
		t.Fatalf("MESHNET_WIREGUARD_MODE=userspace: %q %v %v", cfg.WireGuardMode, err, cfg.Validate())
	}
	cfg, err = parseFlags([]string{"--wireguard-mode", "kernal"}, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `--wireguard-mode "kernal": choose auto`) {
		t.Errorf("a misspelt mode: %v", err)
	}
}
