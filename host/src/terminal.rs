//! The process's terminal: standard output and standard error written through one lock,
//! with at most one live status line.
//!
//! A status line is drawn on stderr without a newline and redrawn in place. On a terminal
//! where stdout and stderr share the screen, anything else printed (a `print` sink's
//! batch, a log line) would start in the middle of it. So everything goes through
//! [`Terminal`]: it erases the status line, writes, and draws the status line again once
//! the output ends a line. A printed line therefore always starts at column 0, and the
//! status line is always the last line on the screen.

use std::io::{self, IsTerminal, Write};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// Moves to column 0 and erases the line (`CR`, then `ESC [ 2 K`).
const ERASE_LINE: &[u8] = b"\r\x1b[2K";

/// Standard output and standard error, with a status line at the bottom.
pub struct Terminal<Out, Err> {
    screen: Mutex<Screen<Out, Err>>,
}

struct Screen<Out, Err> {
    out: Out,
    err: Err,
    /// Whether stdout's lines land on the screen the status line is drawn on.
    out_on_screen: bool,
    /// The width of that screen in columns, when known: a longer status line would wrap,
    /// and erasing it would leave its first part behind.
    width: fn() -> Option<usize>,
    /// The status line to show, if any.
    status: Option<String>,
    /// Whether it is on the screen now.
    drawn: bool,
    /// Whether the last output left the cursor inside a line (no status can be drawn
    /// until that line ends).
    line_open: bool,
}

/// The process's terminal.
pub fn terminal() -> &'static Terminal<io::Stdout, io::Stderr> {
    static TERMINAL: LazyLock<Terminal<io::Stdout, io::Stderr>> = LazyLock::new(|| {
        let out_on_screen = io::stdout().is_terminal() && io::stderr().is_terminal();
        Terminal::new(io::stdout(), io::stderr(), out_on_screen, stderr_width)
    });
    &TERMINAL
}

impl<Out: Write, Err: Write> Terminal<Out, Err> {
    /// A terminal writing to `out` and `err`; `out_on_screen`: whether `out` shows on the
    /// screen `err` draws the status line on; `width`: that screen's width.
    pub fn new(out: Out, err: Err, out_on_screen: bool, width: fn() -> Option<usize>) -> Self {
        Self {
            screen: Mutex::new(Screen {
                out,
                err,
                out_on_screen,
                width,
                status: None,
                drawn: false,
                line_open: false,
            }),
        }
    }

    /// Writes `bytes` to stdout, and flushes it.
    pub fn print(&self, bytes: &[u8]) -> io::Result<()> {
        let mut screen = self.lock();
        if !screen.out_on_screen {
            screen.out.write_all(bytes)?;
            return screen.out.flush();
        }
        screen.erase();
        let written = screen
            .out
            .write_all(bytes)
            .and_then(|()| screen.out.flush());
        screen.ended(bytes);
        written
    }

    /// Writes `bytes` to stderr, and flushes it.
    pub fn eprint(&self, bytes: &[u8]) -> io::Result<()> {
        let mut screen = self.lock();
        screen.erase();
        let written = screen
            .err
            .write_all(bytes)
            .and_then(|()| screen.err.flush());
        screen.ended(bytes);
        written
    }

    /// Shows `text` (one line, cut to the screen's width) as the status line, in place of
    /// the one before.
    pub fn set_status(&self, text: &str) -> io::Result<()> {
        let mut screen = self.lock();
        let text = match (screen.width)() {
            // The last column stays free: some terminals wrap on writing into it.
            Some(width) => text.chars().take(width.saturating_sub(1).max(1)).collect(),
            None => text.to_owned(),
        };
        screen.status = Some(text);
        screen.draw()
    }

    /// Leaves the status line on the screen as a line of its own, and shows no more.
    pub fn keep_status(&self) -> io::Result<()> {
        let mut screen = self.lock();
        screen.status = None;
        if std::mem::take(&mut screen.drawn) {
            screen.err.write_all(b"\n")?;
            screen.err.flush()?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Screen<Out, Err>> {
        // A panic while writing leaves nothing half-updated that matters.
        self.screen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<Out: Write, Err: Write> Screen<Out, Err> {
    /// Takes the status line off the screen. A failure is left for the next write to
    /// stderr to report.
    fn erase(&mut self) {
        if std::mem::take(&mut self.drawn) {
            let _ = self
                .err
                .write_all(ERASE_LINE)
                .and_then(|()| self.err.flush());
        }
    }

    /// Notes where `bytes` left the cursor, and draws the status line again if at the
    /// start of a line.
    fn ended(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.line_open = last != b'\n';
        }
        // A failure is left for the next write to stderr to report.
        let _ = self.draw();
    }

    fn draw(&mut self) -> io::Result<()> {
        let Some(status) = &self.status else {
            return Ok(());
        };
        if self.line_open {
            return Ok(());
        }
        self.drawn = true;
        self.err.write_all(ERASE_LINE)?;
        self.err.write_all(status.as_bytes())?;
        self.err.flush()
    }
}

/// The width of the terminal stderr writes to, if it is one.
fn stderr_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct given, and nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let answered = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (answered && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A screen that stdout and stderr both write to, as on a terminal.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn screen(width: fn() -> Option<usize>) -> (Terminal<Shared, Shared>, Shared) {
        let shared = Shared::default();
        (
            Terminal::new(shared.clone(), shared.clone(), true, width),
            shared,
        )
    }

    #[test]
    fn the_status_line_is_erased_before_output_and_drawn_again_after() {
        let (terminal, shared) = screen(|| None);
        terminal.print(b"before\n").unwrap();
        terminal.set_status("batch 1").unwrap();
        terminal.set_status("batch 2").unwrap();
        terminal.print(b"---\nTime: 2000 ms\n").unwrap();
        terminal.eprint(b"INFO stopping\n").unwrap();
        terminal.keep_status().unwrap();
        terminal.print(b"after\n").unwrap();
        assert_eq!(
            shared.text(),
            "before\n\
             \r\x1b[2Kbatch 1\
             \r\x1b[2Kbatch 2\
             \r\x1b[2K---\nTime: 2000 ms\n\r\x1b[2Kbatch 2\
             \r\x1b[2KINFO stopping\n\r\x1b[2Kbatch 2\
             \nafter\n"
        );
    }

    #[test]
    fn no_status_is_drawn_inside_an_unfinished_line() {
        let (terminal, shared) = screen(|| None);
        terminal.set_status("batch 1").unwrap();
        terminal.eprint(b"error: ").unwrap();
        terminal.set_status("batch 2").unwrap();
        terminal.eprint(b"it broke\n").unwrap();
        assert_eq!(
            shared.text(),
            "\r\x1b[2Kbatch 1\r\x1b[2Kerror: it broke\n\r\x1b[2Kbatch 2"
        );
    }

    #[test]
    fn a_status_line_is_cut_to_the_screen_width() {
        let (terminal, shared) = screen(|| Some(8));
        terminal.set_status("batch 12 running 4.2 s").unwrap();
        assert_eq!(shared.text(), "\r\x1b[2Kbatch 1");
    }

    #[test]
    fn stdout_elsewhere_leaves_the_status_line_alone() {
        let (out, err) = (Shared::default(), Shared::default());
        let terminal = Terminal::new(out.clone(), err.clone(), false, || None);
        terminal.set_status("batch 1").unwrap();
        terminal.print(b"(a, 1)\n").unwrap();
        assert_eq!(out.text(), "(a, 1)\n");
        assert_eq!(err.text(), "\r\x1b[2Kbatch 1");
    }
}
