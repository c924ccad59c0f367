package cli

import (
	"fmt"
	"strings"
)

// didYouMean returns sep + "did you mean X?" + end for the candidates
// closest to word: those that start with it, or are at most two edits
// from it. It returns "" when nothing is close, so a wild guess is never
// offered.
func didYouMean(word string, candidates []string, sep, end string) string {
	if s := closest(word, candidates); len(s) > 0 {
		return fmt.Sprintf("%sdid you mean %s?%s", sep, strings.Join(s, " or "), end)
	}
	return ""
}

// closest are the candidates didYouMean offers: all those at the
// smallest distance. Distances are doubled edits, so a candidate word is a
// prefix of (3) ranks between one edit away (2) and two (4).
func closest(word string, candidates []string) []string {
	var best []string
	bestDist := 5
	for _, c := range candidates {
		if c == word {
			continue
		}
		d := 2 * levenshtein(strings.ToLower(word), strings.ToLower(c))
		if word != "" && strings.HasPrefix(c, word) {
			d = min(d, 3)
		}
		switch {
		case d < bestDist:
			best, bestDist = []string{c}, d
		case d == bestDist:
			best = append(best, c)
		}
	}
	return best
}

// levenshtein is the edit distance between a and b (insertions,
// deletions, substitutions), over runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
