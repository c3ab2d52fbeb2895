//! The invoice template's HTML laid out as an A4 PDF (printpdf's HTML
//! layout), with DejaVu Sans embedded so Cyrillic and accented Latin print.

use std::collections::BTreeMap;

use printpdf::{Base64OrRaw, GeneratePdfOptions, PdfDocument, PdfSaveOptions};

/// DejaVu Sans (free licence: `assets/fonts/LICENSE-DejaVu`); templates
/// name it as `font-family: "DejaVu Sans"`.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name templates use for the embedded font.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// PDFs laid out at once, at most: each takes a core for a while.
const AT_ONCE: usize = 2;

/// [`from_html`] off the async threads, at most [`AT_ONCE`] at a time
/// across the process (API requests and the mailer alike).
pub async fn render(html: String) -> Result<Vec<u8>, String> {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AT_ONCE);
    let _permit = PERMITS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || from_html(&html))
        .await
        .map_err(|e| format!("laying out the PDF: {e}"))?
}

/// `html` as PDF bytes.
pub fn from_html(html: &str) -> Result<Vec<u8>, String> {
    let mut fonts = BTreeMap::new();
    fonts.insert(
        FONT_FAMILY.to_owned(),
        Base64OrRaw::Raw(DEJAVU_SANS.to_vec()),
    );
    let options = GeneratePdfOptions {
        page_width: Some(210.0),
        page_height: Some(297.0),
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let doc = PdfDocument::from_html(html, &BTreeMap::new(), &fonts, &options, &mut warnings)
        .map_err(|e| format!("laying out the PDF: {e}"))?;
    Ok(doc.save(&PdfSaveOptions::default(), &mut warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invoice_pdf_holds_its_number_lines_tax_and_total_in_both_languages() {
        let t = crate::templates::Templates::builtin();
        for (lang, title, total) in [("en", "Invoice", "Total"), ("ru", "Счёт", "Итого")] {
            let html = t
                .invoice_html(lang, &crate::templates::sample_invoice_context())
                .unwrap();
            let pdf = from_html(&html).unwrap();
            assert!(pdf.starts_with(b"%PDF-"));
            let text = pdf_extract::extract_text_from_mem(&pdf).unwrap();
            let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for needle in [
                title,
                "INV-2026-000042",
                "Dedicated E3-1230: service svc_sample for 1m",
                "VAT 19.00 %",
                "7.82 EUR",
                total,
                "49.00 EUR",
            ] {
                assert!(
                    words.contains(needle),
                    "{lang}: {needle:?} not in {words:?}"
                );
            }
        }
    }
}
