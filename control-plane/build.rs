//! Embeds `templates/` into the binary, so a deployment is one file.
fn main() {
    minijinja_embed::embed_templates!("../templates", &[".html"][..]);
}
