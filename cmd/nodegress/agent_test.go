package main

import "testing"

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
