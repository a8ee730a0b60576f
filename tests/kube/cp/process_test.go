package cp

import (
	"slices"
	"testing"
)

func TestMergeArgs(t *testing.T) {
	tests := []struct {
		name        string
		base, extra []string
		want        []string
	}{
		{
			name: "no extra",
			base: []string{"--a=1", "--b=2"},
			want: []string{"--a=1", "--b=2"},
		},
		{
			name:  "replace in place",
			base:  []string{"--a=1", "--b=2"},
			extra: []string{"--a=3"},
			want:  []string{"--a=3", "--b=2"},
		},
		{
			name:  "append new",
			base:  []string{"--a=1"},
			extra: []string{"--c=3", "--v"},
			want:  []string{"--a=1", "--c=3", "--v"},
		},
		{
			name:  "prefix is not the same flag",
			base:  []string{"--service-account-key-file=x"},
			extra: []string{"--service-account-key=y"},
			want:  []string{"--service-account-key-file=x", "--service-account-key=y"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := slices.Clone(tt.base)
			if got := mergeArgs(tt.base, tt.extra); !slices.Equal(got, tt.want) {
				t.Errorf("mergeArgs = %v, want %v", got, tt.want)
			}
			if !slices.Equal(tt.base, base) {
				t.Errorf("mergeArgs modified its base to %v", tt.base)
			}
		})
	}
}
