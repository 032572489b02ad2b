//! A camera for the scanning test: Chromium's fake capture device plays a Y4M video file, here one
//! that shows a QR code (encoded with the `qrcode` crate) in the middle of a white frame.

use std::path::{Path, PathBuf};

/// Width and height of the video (even, as 4:2:0 chroma needs).
const WIDTH: usize = 640;
const HEIGHT: usize = 480;
/// Pixels per QR module; white border of 4 modules, as the QR standard asks.
const SCALE: usize = 8;
const QUIET: usize = 4;

/// Writes a short Y4M video showing the QR code of `content` into `dir`; returns its path.
pub fn qr_video(content: &str, dir: &Path) -> PathBuf {
    let code = qrcode::QrCode::new(content.as_bytes()).unwrap_or_else(|err| panic!("QR code of {content}: {err}"));
    let modules = code.width();
    let side = (modules + 2 * QUIET) * SCALE;
    assert!(
        side <= HEIGHT,
        "{content} makes a QR code too large for the frame ({side} px)"
    );
    let (left, top) = ((WIDTH - side) / 2, (HEIGHT - side) / 2);
    let mut luma = vec![235u8; WIDTH * HEIGHT];
    for (index, colour) in code.to_colors().iter().enumerate() {
        if *colour != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (index % modules, index / modules);
        for row in 0..SCALE {
            let start = (top + (QUIET + y) * SCALE + row) * WIDTH + left + (QUIET + x) * SCALE;
            luma[start..start + SCALE].fill(16);
        }
    }
    let chroma = vec![128u8; WIDTH / 2 * HEIGHT / 2];
    let mut video = format!("YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n").into_bytes();
    for _ in 0..10 {
        video.extend_from_slice(b"FRAME\n");
        video.extend_from_slice(&luma);
        video.extend_from_slice(&chroma);
        video.extend_from_slice(&chroma);
    }
    let path = dir.join(format!("qr-{}.y4m", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, video).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    path
}
