// One sheet loaded as a game loads it, twice: with load.atlas (TexturePacker JSON-hash) and with
// load.aseprite (Aseprite JSON + createFromAseprite). What Phaser made of it is left on window.genq
// for the test to read: every frame's rectangle, the animations, and a picture of one frame drawn
// from each at its natural size, side by side.
//
// The query names the sheet (its path without extension), the frame to draw by its atlas name and
// by its Aseprite index, and that frame's untrimmed size (the canvas is two of them wide).
(function () {
  "use strict";
  const query = new URLSearchParams(window.location.search);
  const sheet = query.get("sheet");
  const width = Number(query.get("width"));
  const height = Number(query.get("height"));
  const result = (window.genq = { done: false, errors: [] });
  window.addEventListener("error", (event) => result.errors.push(String(event.message)));

  function rectangles(texture) {
    const out = {};
    for (const name of texture.getFrameNames()) {
      const frame = texture.get(name);
      out[name] = {
        frame: { x: frame.cutX, y: frame.cutY, w: frame.cutWidth, h: frame.cutHeight },
        trimmed: frame.data.trim,
        spriteSourceSize: { x: frame.x, y: frame.y },
        sourceSize: { w: frame.realWidth, h: frame.realHeight },
      };
    }
    return out;
  }

  function animations(list) {
    return list.map((animation) => ({
      key: animation.key,
      frames: animation.frames.map((step) => ({
        name: step.textureFrame,
        frame: { x: step.frame.cutX, y: step.frame.cutY, w: step.frame.cutWidth, h: step.frame.cutHeight },
        duration: step.duration,
      })),
    }));
  }

  new Phaser.Game({
    type: Phaser.CANVAS,
    width: 2 * width,
    height: height,
    transparent: true,
    // Crisp, as pixelArt would be, but without its roundPixels: with that on, the canvas renderer
    // draws every frame half a pixel wider and taller (to hide seams between tiles), which smears a
    // frame's last column and row one pixel on. At whole-pixel positions and scale 1 nothing needs
    // rounding, so Phaser draws exactly the rectangles the atlas gives.
    antialias: false,
    roundPixels: false,
    banner: false,
    audio: { noAudio: true },
    scene: {
      preload() {
        this.load.on("loaderror", (file) => result.errors.push("could not load " + file.src));
        this.load.atlas("atlas", sheet + ".png", sheet + ".json");
        this.load.aseprite("aseprite", sheet + ".png", sheet + ".aseprite.json");
      },
      create() {
        result.atlas = rectangles(this.textures.get("atlas"));
        result.aseprite = rectangles(this.textures.get("aseprite"));
        result.animations = animations(this.anims.createFromAseprite("aseprite"));
        this.add.image(0, 0, "atlas", query.get("frame")).setOrigin(0);
        this.add.image(width, 0, "aseprite", query.get("index")).setOrigin(0);
        this.game.renderer.snapshot((picture) => {
          result.drawn = picture.src;
          result.done = true;
        });
      },
    },
  });
})();
