//! SVG charts rendered to PNG with resvg, with an embedded font (DejaVu Sans) so that text renders on machines
//! without fonts.

use resvg::{tiny_skia, usvg};

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// Renders an SVG document to PNG bytes at `scale` (2 gives a sharp image on high-density screens).
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    let mut options = usvg::Options::default();
    {
        let db = options.fontdb_mut();
        db.load_font_data(REGULAR.to_vec());
        db.load_font_data(BOLD.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("rendering the chart: {e}"))?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).ceil() as u32,
        (size.height() * scale).ceil() as u32,
    );
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("a {w}x{h} image cannot be allocated"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| format!("encoding the PNG: {e}"))
}

/// Checks that a plot's file name ends in `.svg` or `.png` (before any work is done).
pub fn check_extension(path: &std::path::Path) -> Result<(), String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg" | "png") => Ok(()),
        _ => Err("the plot's file name must end in .svg or .png".into()),
    }
}

/// The chart as the bytes of the file format `path`'s extension names: `.svg` as is, `.png` rendered.
pub fn encode_for(path: &std::path::Path, svg: &str) -> Result<Vec<u8>, String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(svg.as_bytes().to_vec()),
        Some("png") => svg_to_png(svg, 2.0),
        _ => Err("the plot's file name must end in .svg or .png".into()),
    }
}
