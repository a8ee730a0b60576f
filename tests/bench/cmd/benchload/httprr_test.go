package main

import "testing"

func TestAnswerEnd(t *testing.T) {
	tests := []struct {
		name    string
		resp    string
		want    answer
		wantErr bool
	}{
		{"header incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", answer{}, false},
		{"body incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", answer{}, false},
		{"complete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", answer{complete: true}, false},
		{"complete, server closing", "HTTP/1.1 200 OK\r\ncontent-length:5\r\nConnection: close\r\n\r\nhello",
			answer{complete: true, closing: true}, false},
		{"keep-alive said", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", answer{complete: true}, false},
		{"not 200", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", answer{}, true},
		{"no length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", answer{}, true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", answer{}, true},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", answer{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answerEnd([]byte(tt.resp))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("answerEnd = %+v, want %+v", got, tt.want)
			}
		})
	}
}
