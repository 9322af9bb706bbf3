"""The photographs inside Debian packages that ``data synth`` uses when the packages are installed.

Each package maps to a name prefix and ``{path below /usr/share: (category, scene[, name])}``; a path that
runs through a ``.rcc`` file names a member of that Qt resource archive (GCompris keeps its photos
there). Only camera photographs are listed: every picture was looked at, and drawn, rendered or
painted ones (most desktop wallpapers, GCompris' Van Gogh details, some Scratch backdrops) are left
out. Photos of one scene share a split. ``make demo-model`` installs every package listed here.
"""

from __future__ import annotations

# path -> (category, scene) or (category, scene, name); see photo_name.
Catalogue = dict[str, tuple[str, ...]]


def photo_name(prefix: str, where: tuple[str, ...]) -> str:
    """``PREFIX_NAME`` for a catalogue entry ``(category, scene[, name])``; NAME is the scene unless given."""
    return f"{prefix}_{where[2] if len(where) > 2 else where[1]}"


def _folder(folder: str, category: str, names: str, suffix: str = ".jpg", scenes: dict[str, str] | None = None,
            prefix: str = "") -> Catalogue:
    """``folder/NAME.suffix -> (category, scene, prefix + NAME)`` for the space-separated ``names``; the
    scene is ``prefix + NAME`` unless ``scenes`` maps NAME to another (two views of one place share a split)."""
    scenes = scenes or {}
    return {f"{folder}/{name}{suffix}": (category, prefix + scenes.get(name, name), prefix + name)
            for name in names.split()}


_WALLPAPERS = "wallpapers/{}/contents/images/2560x1440.jpg"  # plasma-workspace-wallpapers' layout
_GCOMPRIS = "gcompris-qt/rcc/{0}.rcc/gcompris/src/activities/{0}/resource"
_SCRATCH = "scratch/Media/Backgrounds"

DEBIAN_PHOTOS: dict[str, tuple[str, Catalogue]] = {
    "opencv-doc": ("opencv", {
        **{f"doc/opencv-doc/examples/data/{name}": where for name, where in {
            "fruits.jpg": ("objects", "fruits"), "baboon.jpg": ("animals", "baboon"),
            "HappyFish.jpg": ("animals", "fish"), "home.jpg": ("scenes", "home"),
            "squirrel_cls.jpg": ("animals", "squirrel"), "starry_night.jpg": ("documents", "starry_night"),
            "orange.jpg": ("objects", "orange"), "messi5.jpg": ("people", "messi"),
            "apple.jpg": ("objects", "apple"), "butterfly.jpg": ("animals", "butterfly"),
            "building.jpg": ("scenes", "building"), "aero1.jpg": ("scenes", "aero1"),
            "aero3.jpg": ("scenes", "aero3"), "basketball1.png": ("people", "basketball"),
            "box_in_scene.png": ("objects", "box_in_scene"), "graf1.png": ("scenes", "graffiti"),
            "smarties.png": ("objects", "smarties"), "chicky_512.png": ("animals", "chicky"),
            "rubberwhale1.png": ("objects", "rubberwhale"), "cards.png": ("objects", "cards"),
        }.items()},
        "doc/opencv-doc/examples/alphamat/input_images/plant.jpg": ("objects", "plant"),
        **{f"doc/opencv-doc/examples/text/scenetext0{i}.jpg": ("scenes", f"scenetext{i}") for i in range(1, 7)},
    }),
    "lomiri-wallpapers-16.04": ("wallpaper", {f"backgrounds/{name}": where for name, where in {
        "Bridge_by_Sander_Klootwijk.jpg": ("scenes", "bridge"), "Dragonfly_by_Bolly.jpg": ("nature", "tree"),
        "Picture_0B_by_freespace.jpg": ("objects", "fig"), "Picture_1A_by_freespace.jpg": ("objects", "brushes"),
        "Wine_by_Jakkub_Mede.jpg": ("objects", "wine"), "aitzgorri_by_Aitzol_Berasategi.jpg": ("scenes", "aitzgorri"),
        "analogpattern_by_Peter_Nerlich.jpg": ("texture", "analogpattern"),
        "free_by_Peter_Nerlich.jpg": ("objects", "lamp"), "friends_by_Aitzol_Berasategi.jpg": ("animals", "dogs"),
        "greentock_by_Peter_Nerlich.jpg": ("objects", "clock"), "life_by_Aitzol_Berasategi.jpg": ("nature", "stream"),
        "picosdeeuropa_by_Aitzol_Berasategi.jpg": ("scenes", "picosdeeuropa"),
        "seeding_by_Clements_Engelhardt.jpg": ("nature", "dandelions"),
        "sunset_by_Aitzol_Berasategi.jpg": ("scenes", "sunset"),
    }.items()}),
    "lomiri-wallpapers-20.04": ("wallpaper", {
        "backgrounds/Infinite-Sea_by_Aury88.jpg": ("scenes", "night_sky"),
        "backgrounds/Kleiber_by_Lukas_Baubkus.jpg": ("animals", "kleiber"),
    }),
    "mate-backgrounds": ("wallpaper", {f"backgrounds/mate/nature/{name}.jpg": where for name, where in {
        "Aqua": ("objects", "drop"), "Blinds": ("nature", "blinds"), "Dune": ("nature", "dune"),
        "FreshFlower": ("nature", "freshflower"), "Garden": ("nature", "garden"),
        "GreenMeadow": ("nature", "meadow"), "LadyBird": ("animals", "ladybird"),
        "RainDrops": ("nature", "raindrops"), "Storm": ("scenes", "storm"), "TwoWings": ("animals", "twowings"),
        "Wood": ("texture", "wood"), "YellowFlower": ("nature", "yellowflower"),
    }.items()}),
    "plasma-workspace-wallpapers": ("wallpaper", {_WALLPAPERS.format(name): where for name, where in {
        "BytheWater": ("scenes", "bythewater"), "ColdRipple": ("scenes", "pier"),
        "DarkestHour": ("scenes", "darkesthour"), "EveningGlow": ("scenes", "boats"),
        "FallenLeaf": ("nature", "fallenleaf"), "Grey": ("texture", "facade"), "Kite": ("scenes", "kite"),
        "OneStandsOut": ("nature", "onestandsout"), "Path": ("nature", "forest_path"),
        "summer_1am": ("scenes", "summer_1am"),
    }.items()}),
    # GCompris (educational games): landmarks, animals and musicians, 1024-1920 px, WebP inside .rcc archives.
    "gcompris-qt-data": ("gcompris", {
        **{f"{_GCOMPRIS.format('explore_monuments')}/{country}/{name}.webp": ("scenes", name)
           for country, names in {
               "wonders": "chichenItza christTheRedeemer colosseum greatWallofChina machuPicchu petra tajMahal",
               "usa": "cabrillo canyondeChelly castillodeSanMarcos castleClinton fortSumter "
                      "georgeWashingtonBirthplace lincolnMemorial mountRushmore navajo statueofLiberty",
               "india": "ajantaCave charminar gatewayofIndia goldenTemple greatStupa hawaMahal konarkSunTemple "
                        "mysorePalace qutubMinar rangGhar victoriaMemorial",
               "egypt": "bentPyramid greatPyramidOfGiza meidumPyramid redPyramid",
               "france": "arlesAmphitheater chateaudeChambord chateaudeChenonceau citedeCarcassonne eiffelTower "
                         "montStMichel palaisdesPapes pontduGard reimsCathedral rocamadour",
               "germany": "aulaPalatina berlinCathedral brandenburgGate neuschwansteinCastle schwerinPalace "
                          "trierImperialBaths wormsCathedral",
           }.items() for name in names.split()},
        **_folder(f"{_GCOMPRIS.format('explore_world_animals')}/animals", "animals",
                  "bison chameleon crocodile dragon giraffe hedgehog jaguar kangaroo koala lemur moose narwhal "
                  "panda polar_bear scarlet_macaw", ".webp", prefix="wild_"),
        **_folder(_GCOMPRIS.format("erase"), "animals",
                  "alpaca bee butterfly calf camels caterpillar chamaeleon cheetah crab dolphin flying_fox gibbon "
                  "giraffe goat gorilla gosling heron horse kingfisher kitten long_nosed_monkey macaque meerkats "
                  "northern_harrier nubian_ibex penguin pika red_panda rhinoceros spoonbills squirrel swans toucan",
                  ".webp"),
        **_folder(f"{_GCOMPRIS.format('explore_farm_animals')}/animals", "animals",
                  "cat chicken cow dog duck horse owl pig sheep", ".webp", prefix="farm_"),
        **_folder(f"{_GCOMPRIS.format('explore_world_music')}/music", "people",
                  "australia ireland italy japan mexico orchestra", ".webp", prefix="music_"),
        **_folder(f"{_GCOMPRIS.format('explore_world_music')}/music", "objects",
                  "africa america middleeast", ".webp", prefix="music_"),
        **_folder(_GCOMPRIS.format("clickgame"), "scenes", "sea1 sea2 sea3 sea4 sea5 sea6", ".webp"),
    }),
    # Tux Paint's photo templates.
    "tuxpaint-data": ("tuxpaint", {
        **_folder("tuxpaint/templates", "texture",
                  "burnt_bark mossy_bark mossy_log mudstone ocean_splash rocks"),
        **_folder("tuxpaint/templates", "scenes", "cliff corn_maze lighthouse ocean_waves redwoods_above "
                  "sun_behind_clouds sun_behind_leaves trees_above trees_at_dusk"),
        **_folder("tuxpaint/templates", "animals", "jellyfish sheep"),
        **_folder("tuxpaint/templates", "objects", "spiders_web wool_mill_machine"),
    }),
    # The EFL toolkit's test images.
    "libelementary-data": ("elementary", {
        **_folder("elementary/images", "people", "insanely_huge_test_image twofish"),
        **_folder("elementary/images", "animals", "mystrale_2"),
        **_folder("elementary/images", "texture", "plant_01 rock_01 rock_02 wood_01 panel_01",
                  scenes={"rock_02": "rock_01"}),
        **_folder("elementary/images", "scenes", "sky_01 sky_02 sky_03 sky_04"),
    }),
    "lxqt-themes": ("lxqt", {
        **_folder("lxqt/wallpapers", "animals", "Butterfly-Kenneth-Wimer"),
        **_folder("lxqt/wallpapers", "scenes", "after-the-rain fog this-is-not-windows"),
        **_folder("lxqt/wallpapers", "animals", "butterfly", ".png"),
        **_folder("lxqt/wallpapers", "scenes", "Valendas beam cloud flowers", ".png"),
        **_folder("lxqt/wallpapers", "objects", "appleflower drop", ".png"),
    }),
    # KDE's jigsaw puzzle photos.
    "palapeli-data": ("palapeli", {
        **_folder("palapeli/collection", "scenes", "castle-maintenon cincinnati-bridge"),
        **_folder("palapeli/collection", "objects", "citrus-fruits"),
        **_folder("palapeli/collection", "animals", "european-honey-bee panther-chameleon-female"),
    }),
    "ruby-rmagick-doc": ("rmagick", {
        **_folder("doc/ruby-rmagick-doc/html/ex/images", "people", "Ballerina3"),
        **_folder("doc/ruby-rmagick-doc/html/ex/images", "animals", "Cheetah"),
        **_folder("doc/ruby-rmagick-doc/html/ex/images", "scenes", "Hot_Air_Balloons_H Red_Rocks"),
    }),
    # Camera photos of postcards held in a hand (CImg's gallery).
    "cimg-doc": ("cimg", {
        **_folder("doc/cimg-dev/html/img", "people", "postcard10"),
        **_folder("doc/cimg-dev/html/img", "objects", "postcard27 postcard33"),
        **_folder("doc/cimg-dev/html/img", "scenes",
                  "postcard34 postcard35 postcard75 postcard77 postcard78 postcard79"),
        **_folder("doc/cimg-dev/html/img", "animals", "postcard76"),
    }),
    "hugin-data": ("hugin", _folder("hugin/xrc/data/help_en_EN", "scenes", "CA_fringes00 CA_tCA00")),
    "digikam-data": ("digikam", _folder("digikam/about/images", "scenes", "body-background")),
    "sddm-theme-maldives": ("maldives", _folder("sddm/themes/maldives", "scenes", "background")),
    # Scratch's photo backdrops (480x360); its drawn ones are left out.
    "scratch": ("scratch", {
        **_folder(f"{_SCRATCH}/Indoors", "scenes", "chalkboard clothing-store hall kitchen the-movies-inside"),
        **_folder(f"{_SCRATCH}/Nature", "nature", "beach-malibu canyon flower-bed forest garden-rock grand-canyon "
                  "gravel-desert hill lake moon pathway tree water-and-rocks wave", scenes={"canyon": "grand-canyon"}),
        **_folder(f"{_SCRATCH}/Outdoors", "scenes", "all-sports-mural atom-playground bench-with-view "
                  "berkeley-mural boardwalk brick-wall-and-stairs brick-wall1 brick-wall2 building-at-mit "
                  "building-fireproof castle city-with-water city-with-water2 driveway hallway_outdoors hay_field "
                  "houses mansion mural-faro parking-ramp pool route66 silos the-movies train-tracks1 "
                  "train-tracks2 village wooden-house",
                  scenes={"brick-wall2": "brick-wall1", "city-with-water2": "city-with-water",
                          "train-tracks2": "train-tracks1"}),
        **_folder(f"{_SCRATCH}/Sports", "scenes", "baseball-field basketball-court1-a basketball-court1-b "
                  "football-field playing-field tennis-backboard",
                  scenes={"basketball-court1-b": "basketball-court1-a"}),
    }),
}
