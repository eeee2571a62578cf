//! A line diff between two payload versions, for the registry's diff page: the longest common
//! subsequence of lines, bounded so a huge payload cannot make a page request expensive.
//!
//! Pure: no I/O, no HTML (the page renders the [`Line`]s).

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// Above this many lines on either side the diff gives up (everything removed, then added):
/// the table is `a × b` cells.
pub const MAX_LINES: usize = 4000;

/// The lines of `a` removed and of `b` added, in order, with the common ones between.
pub fn lines<'a>(a: &'a str, b: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // Common head and tail first: most versions differ in a few places.
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if am.len() > MAX_LINES || bm.len() > MAX_LINES {
        out.extend(am.iter().map(|l| Line::Removed(l)));
        out.extend(bm.iter().map(|l| Line::Added(l)));
    } else {
        let (n, m) = (am.len(), bm.len());
        // lcs[i][j]: the LCS length of am[i..] and bm[j..].
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if am[i] == bm[j] {
                out.push(Line::Same(am[i]));
                i += 1;
                j += 1;
            } else if lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1] {
                out.push(Line::Removed(am[i]));
                i += 1;
            } else {
                out.push(Line::Added(bm[j]));
                j += 1;
            }
        }
        out.extend(am[i..].iter().map(|l| Line::Removed(l)));
        out.extend(bm[j..].iter().map(|l| Line::Added(l)));
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::Line::*;
    use super::*;

    fn check(a: &str, b: &str, want: &[Line]) {
        assert_eq!(lines(a, b), want, "{a:?} → {b:?}");
    }

    #[test]
    fn diffs_by_line() {
        check("", "", &[]);
        check("a\nb", "a\nb", &[Same("a"), Same("b")]);
        check("a\nb\nc", "a\nc", &[Same("a"), Removed("b"), Same("c")]);
        check("a\nc", "a\nb\nc", &[Same("a"), Added("b"), Same("c")]);
        check(
            "x\na\ny",
            "x\nb\ny",
            &[Same("x"), Removed("a"), Added("b"), Same("y")],
        );
        check("a", "", &[Removed("a")]);
        check("", "b", &[Added("b")]);
        check(
            "a\nb\nc\nd",
            "b\nc\nd\ne",
            &[Removed("a"), Same("b"), Same("c"), Same("d"), Added("e")],
        );
    }

    #[test]
    fn huge_inputs_stay_bounded() {
        let a: String = (0..MAX_LINES + 10).map(|i| format!("a{i}\n")).collect();
        let b: String = (0..MAX_LINES + 10).map(|i| format!("b{i}\n")).collect();
        let d = lines(&a, &b);
        assert_eq!(d.len(), 2 * (MAX_LINES + 10));
    }
}
