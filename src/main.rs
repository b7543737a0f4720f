fn main() {
    vgg::hello();
}
