package main

import (
	"fmt"
	"testing"
)

func TestParsePodRedirect(t *testing.T) {
	tests := []struct {
		value            string
		replaceKubeProxy bool
		want, wantErr    bool
	}{
		{value: "auto", want: false},
		{value: "auto", replaceKubeProxy: true, want: true},
		{value: "on", want: true},
		{value: "off", replaceKubeProxy: true, want: false},
		{value: "yes", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parsePodRedirect(tc.value, tc.replaceKubeProxy)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parsePodRedirect(%q, %v) = %v, %v; want %v (error %v)", tc.value, tc.replaceKubeProxy, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "", want: "[]"},
		{in: "10.0.5.0/24, 10.0.6.7", want: "[10.0.5.0/24 10.0.6.7/32]"},
		{in: "10.0.5.9/24", want: "[10.0.5.0/24]"},
		{in: "fd00::/64", wantErr: true},
		{in: "ten", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parsePrefixes(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && fmt.Sprint(got) != tc.want) {
			t.Errorf("parsePrefixes(%q) = %v, %v; want %s (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
